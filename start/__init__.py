"""The entrypoint and the engine: catalogue, spawn, reap, restart, stop, drain, log pumps."""
