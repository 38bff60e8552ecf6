"""``python -m dashboard``: the same command line as the ``dashboard`` console script."""
import sys

# The server commands run on gevent: patch the standard library before anything else imports it.
if len(sys.argv) > 1 and sys.argv[1] in ("serve", "demo"):
    from gevent import monkey

    monkey.patch_all()

from dashboard.cli import main  # noqa: E402

sys.exit(main())
