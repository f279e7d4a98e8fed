"""The soak's one error type and its exit codes. Imports nothing."""

from __future__ import annotations

EXIT_PASSED = 0  # every property held
EXIT_FAILED = 1  # the soak ran and some property did not hold (the report says which)
EXIT_SETUP = 2  # usage, or what the soak needs is missing (root, unshare, a user): nothing ran


class SoakError(Exception):
    """The soak cannot run here; the message says why, in one line."""
