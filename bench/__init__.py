"""Benchmarks of coditect-start beside supervisord, tini and s6. `python -m bench.run`."""
