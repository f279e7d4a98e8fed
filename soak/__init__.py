"""A chaos soak of the demo pod: coditect-start as PID 1 of its own PID namespace, unprivileged,
on a read-only root filesystem, while its children are killed, stopped, crash-looped and made
to flood their logs. See docs/SOAK.md; run it with `make soak` or `scripts/soak`."""
