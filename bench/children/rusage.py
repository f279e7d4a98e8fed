"""Run a command and print `WALL_SECONDS MAXRSS_KIB EXIT_CODE` for it alone.

Run with `python -I -S` so that this process is small: a child's ru_maxrss also counts the
memory of the process it was forked from, up to its exec, so measuring straight from the
harness would report the harness's own size.
"""

import os
import sys
import time

began = time.monotonic()
quiet = [(os.POSIX_SPAWN_OPEN, fd, os.devnull, os.O_WRONLY, 0) for fd in (1, 2)]
pid = os.posix_spawnp(sys.argv[1], sys.argv[1:], os.environ, file_actions=quiet)
_, status, usage = os.wait4(pid, 0)
took = time.monotonic() - began
print(f"{took:.6f} {usage.ru_maxrss} {os.waitstatus_to_exitcode(status)}")
