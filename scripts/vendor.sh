#!/usr/bin/env bash
# Copy the pinned browser libraries (package.json / package-lock.json) into static/vendor/.
#
# The vendored files are committed: the dashboard works with no network at the
# track and CI needs no npm. Run this only to change a library version:
#   edit package.json, `npm install --package-lock-only`, then `scripts/vendor.sh`.
# `npm ci` runs in a temporary folder, so the repo never gets a node_modules/.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
vendor="$repo/static/vendor"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

cp "$repo/package.json" "$repo/package-lock.json" "$work/"
(cd "$work" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
nm="$work/node_modules"

rm -rf "$vendor"
mkdir -p "$vendor/socket.io-client" "$vendor/uplot"

# socket.io-client: the browser bundle, which also bundles engine.io-client,
# engine.io-parser, socket.io-parser and @socket.io/component-emitter, so each
# of their licences travels with it.
cp "$nm/socket.io-client/dist/socket.io.min.js" "$nm/socket.io-client/dist/socket.io.min.js.map" "$vendor/socket.io-client/"
cp "$nm/socket.io-client/LICENSE" "$vendor/socket.io-client/LICENSE"
for bundled in engine.io-client engine.io-parser socket.io-parser @socket.io/component-emitter; do
    cp "$nm/$bundled/LICENSE" "$vendor/socket.io-client/LICENSE.${bundled##*/}"
done

# uPlot: the IIFE build (global `uPlot`) and its stylesheet.
cp "$nm/uplot/dist/uPlot.iife.min.js" "$nm/uplot/dist/uPlot.min.css" "$vendor/uplot/"
cp "$nm/uplot/LICENSE" "$vendor/uplot/LICENSE"

# A record of exactly what was copied, for reviewers and licence audits.
{
    echo "Vendored by scripts/vendor.sh from the npm packages pinned in package-lock.json."
    for pkg in socket.io-client engine.io-client engine.io-parser socket.io-parser @socket.io/component-emitter uplot; do
        printf '%s %s %s\n' "$pkg" \
            "$(node -p "require('$nm/$pkg/package.json').version")" \
            "$(node -p "require('$nm/$pkg/package.json').license")"
    done
} > "$vendor/VERSIONS.txt"

echo "vendored into $vendor:"
(cd "$vendor" && find . -type f | sort)
