"""bench.imports: what importing a million-row log costs: rows a second and peak memory.

Writes a plain CSV of ``--rows`` rows (default a million) into a temporary folder: the OKC recording's
fixes at 25 Hz over and over (each pass moved on in time, so the lap timer times laps all along), with
speed, rpm and coolant temperature, like a logger's export. Then runs ``dashboard import`` on it as a
separate process against a fresh SQLite database (or ``--db-url``), and prints the rows a second, the
import process's peak RSS (``ru_maxrss``), the frames and laps stored. The CSV writing is not timed.

    python -m bench.imports [--rows 1000000] [--db-url URL] [--out FILE]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from dashboard.telemetry.importers import ImportReport
from dashboard.telemetry.importers.nmea import frames as nmea_frames

REPO = Path(__file__).resolve().parents[1]
RECORDING = REPO / "tests" / "data" / "okc-tillotson-plain.nmea"
PERIOD_S = 0.04  # 25 Hz, the recording's rate
# runs `dashboard import` and tells its own peak RSS on stderr as it exits
# the import's own peak: VmHWM of its memory map (ru_maxrss would carry the parent's peak across fork + exec:
# from a 400 MB test process it read 408 MB for an import that peaked at 84)
RUNNER = ("import atexit, re, sys\n"
          "atexit.register(lambda: print('maxrss_kb', re.search(r'^VmHWM:\\s+(\\d+) kB', "
          "open('/proc/self/status').read(), re.M).group(1), file=sys.stderr))\n"
          "from dashboard.cli import main\n"
          "sys.exit(main(sys.argv[1:]))\n")


def fixes() -> list[tuple[float, float, float]]:
    """(lat, lon, speed km/h) of every fix of the recording, in order."""
    out = []
    for frame in nmea_frames(RECORDING.open(encoding="utf-8", errors="replace"), ImportReport()):
        c = frame.channels
        if c.get("lat") is not None:
            out.append((c["lat"], c["lon"], c.get("gps_speed") or 0.0))
    return out


def write_csv(path: Path, rows: int, start_t: float = 1763917290.0) -> None:
    """``rows`` rows of time, position, speed, rpm and coolant, the recording's fixes looped at 25 Hz."""
    loop = fixes()
    with path.open("w") as f:
        f.write("time,lat,lon,speed,rpm,coolant_temp\n")
        for i in range(rows):
            lat, lon, speed = loop[i % len(loop)]
            f.write(f"{start_t + i * PERIOD_S:.3f},{lat:.8f},{lon:.8f},{speed:.2f},{1800 + 95 * speed:.0f},"
                    f"{80 + (i // 10000) % 20}\n")


def run_import(csv_path: Path, instance: Path, db_url: str | None = None,
               progress_every: int = 100_000) -> dict[str, Any]:
    """Run ``dashboard import`` on the file in its own process; its figures."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DASHBOARD_")}
    env.update({"DASHBOARD_INSTANCE_PATH": str(instance),
                "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")})
    if db_url:
        env["DASHBOARD_DATABASE_URL"] = db_url
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", RUNNER, "import", str(csv_path), "--format", "csv",
                           "--progress-every", str(progress_every)],
                          env=env, capture_output=True, text=True, timeout=3600, check=False)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"import failed ({proc.returncode}): {proc.stderr[-2000:]}")
    maxrss_kb = int(next(line.split()[1] for line in proc.stderr.splitlines() if line.startswith("maxrss_kb")))
    progress = [line for line in proc.stderr.splitlines() if line.startswith("import: ")]
    return {"elapsed_s": round(elapsed, 2), "peak_rss_mb": round(maxrss_kb / 1024, 1), "stdout": proc.stdout.strip(),
            "progress_lines": len(progress)}


def main() -> None:
    """Write the CSV, import it, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--db-url", help="database to import into (default: a fresh SQLite file)")
    parser.add_argument("--out", help="also write the figures as JSON here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-imports-") as tmp:
        csv_path = Path(tmp) / "million.csv"
        write_csv(csv_path, args.rows)
        size_mb = csv_path.stat().st_size / 1e6
        figures = run_import(csv_path, Path(tmp) / "instance", args.db_url)
    figures.update(rows=args.rows, file_mb=round(size_mb, 1),
                   rows_per_s=round(args.rows / figures["elapsed_s"]))
    print(f"imported {args.rows} rows ({figures['file_mb']} MB CSV) in {figures['elapsed_s']} s: "
          f"{figures['rows_per_s']} rows/s, peak RSS {figures['peak_rss_mb']} MB "
          f"({figures['progress_lines']} progress lines)")
    print(figures["stdout"])
    if args.out:
        Path(args.out).write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
