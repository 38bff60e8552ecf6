"""The benchmark of our server against a minimal Node.js socket.io relay (issue 3); not part of the test suite.

Run it with ``python -m bench.run`` (see bench/README.md).
"""
