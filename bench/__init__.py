"""Benchmarks of coditect-start beside supervisord, tini and s6 (issue 8). `python -m bench.run`."""
