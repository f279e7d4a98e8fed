"""One OS process: the only code that spawns a child or sends it a signal.

Each child is a session leader (setsid), so its pid is also its process group id and a
signal to the group reaches everything it started that did not leave the group.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pwd
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass

from start.catalogue import ServiceSpec
from start.childenv import service_environment
from start.fdlimit import restore_in_child
from start.oomkill import in_child, score_of, set_score
from start.strays import MARK, marked, new_mark, signal_marked

F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)  # Linux; the constant is in fcntl from 3.10


class SpawnError(Exception):
    """The child could not be started at all (exec failed, directory missing, …)."""


@dataclass(slots=True)
class ChildProcess:
    popen: subprocess.Popen[bytes]
    pid: int
    started_at: float  # wall clock
    started_mono: float
    mark: str = ""  # in every descendant's environment (start.strays); "" for none
    ready_fd: int | None = None  # read end of `ready=fd:N`'s pipe (start.readyfd reads it)
    oom_score_adj: int | None = None  # what it got, when the catalogue set one (start.oomkill)

    @property
    def stdout_fd(self) -> int | None:
        return self.popen.stdout.fileno() if self.popen.stdout else None

    @property
    def stderr_fd(self) -> int | None:
        return self.popen.stderr.fileno() if self.popen.stderr else None

    def signal_group(self, signum: int) -> bool:
        """Signal the whole process group; False when nothing is left to signal."""
        try:
            os.killpg(self.pid, signum)
            return True
        except ProcessLookupError:
            return False
        except PermissionError:
            # The group leader changed user; the leader itself we may still reach.
            try:
                os.kill(self.pid, signum)
                return True
            except ProcessLookupError:
                return False

    def stop_signal(self, signum: int) -> bool:
        """A stop's signal: the group, and every descendant that left it (start.strays)."""
        sent = self.signal_group(signum)
        if self.mark:
            sent = signal_marked(self.mark, signum) > 0 or sent
        return sent

    def kill_leftovers(self) -> None:
        """After the leader was reaped: SIGKILL what is left of its group, and every process
        that descended from this run in another group or session, before a restart."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        if self.mark:
            signal_marked(self.mark, signal.SIGKILL)

    def leftovers(self) -> bool:
        """Whether anything of this run is still alive (a zombie not yet reaped counts)."""
        return group_exists(self.pid) or bool(self.mark and marked(self.mark))

    def mark_reaped(self, status: int) -> None:
        # Tell Popen the pid is gone so it never calls waitpid on it (our reaper owns that).
        self.popen.returncode = os.waitstatus_to_exitcode(status)


PIPE_BYTES = 1 << 20  # a chatty child fills 64 KiB between two of our reads; 1 MiB it rarely does


def _widen_pipe(fd: int) -> None:
    """Fewer, larger reads for the log pump; the kernel's limit (pipe-max-size) may refuse."""
    with contextlib.suppress(OSError):
        fcntl.fcntl(fd, F_SETPIPE_SZ, PIPE_BYTES)


PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> bool:
    """Adopt orphans of our descendants when we are not PID 1 (Linux only). Here, not beside
    the reaper: it is called before the first spawn, before asyncio is imported."""
    if os.getpid() == 1:
        return True
    try:
        import ctypes  # boot speed: PID 1 (a pod) needs no prctl, so never pays for ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


def group_exists(pgid: int) -> bool:
    """Whether any process (a zombie not yet reaped included) is still in the group."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def needs_notify_socket(spec: ServiceSpec) -> bool:
    """It speaks sd_notify: it is ready when it says so, or must keep saying it is alive."""
    return spec.health.ready.kind == "notify" or spec.health.watchdog is not None


def _notify_env(spec: ServiceSpec, notify_socket: str | None) -> dict[str, str]:
    if notify_socket is None or not needs_notify_socket(spec):
        return {}
    env = {"NOTIFY_SOCKET": notify_socket}
    if spec.health.watchdog is not None:
        # No WATCHDOG_PID: the pid is not known before the fork, and sd_watchdog_enabled()
        # takes a missing one as "for this process".
        env["WATCHDOG_USEC"] = str(round(spec.health.watchdog * 1_000_000))
    return env


def _ready_pipe(number: int) -> tuple[int, int, tuple[int, ...], Callable[[], None] | None]:
    """s6's notification fd: (read end, our copy of the write end, fds to keep open in the
    child, a pre-exec step). The write end must be descriptor `number` in the child while
    every other descriptor is closed (close_fds): placed there in our own table when that
    number is free here, else moved there between fork and exec."""
    read, write = os.pipe()  # both close-on-exec
    os.set_blocking(read, False)
    placed = fcntl.fcntl(write, fcntl.F_DUPFD_CLOEXEC, number)  # the lowest free >= number
    os.close(write)
    if placed == number:
        return read, placed, (number,), None

    def move() -> None:
        os.dup2(placed, number)  # inheritable; `number` (ours) was open, so it is kept
        os.close(placed)

    return read, placed, (number, placed), move


def _chain(*steps: Callable[[], None] | None) -> Callable[[], None] | None:
    present = [step for step in steps if step is not None]
    if len(present) <= 1:
        return present[0] if present else None

    def run_all() -> None:
        for step in present:
            step()

    return run_all


def spawn(spec: ServiceSpec, base_env: dict[str, str],
          notify_socket: str | None = None) -> ChildProcess:
    """`notify_socket`: the pod's sd_notify socket (start.notify), given to services that
    speak it; before the engine there is none, and such services wait for it (start.early)."""
    mark = new_mark(spec.name)
    env = {**service_environment(spec, base_env), **_notify_env(spec, notify_socket), MARK: mark}
    user: int | None = None
    group: int | None = None
    extra_groups: list[int] | None = None
    if spec.uid is not None and spec.uid != os.geteuid():
        if os.geteuid() != 0:
            raise SpawnError(f"user= needs the pod to run as root (it runs as uid {os.geteuid()})")
        entry = pwd.getpwuid(spec.uid)
        user, group = entry.pw_uid, entry.pw_gid
        # The user's own supplementary groups, as initgroups() would set them: without this
        # the child would keep ours (root's group 0).
        extra_groups = os.getgrouplist(entry.pw_name, entry.pw_gid)
        env.update(HOME=entry.pw_dir, USER=entry.pw_name, LOGNAME=entry.pw_name)
    ready_fd: int | None = None
    write_end = -1
    keep: tuple[int, ...] = ()
    move: Callable[[], None] | None = None
    ready = spec.health.ready
    if ready.kind == "fd" and ready.fd is not None:
        ready_fd, write_end, keep, move = _ready_pipe(ready.fd)
    steps = _chain(restore_in_child(), move)
    score = spec.health.oom_score_adj
    oom: Callable[[], None] | None = None
    if score is not None and (steps is not None or user is not None):
        # A pre-exec step already costs subprocess its vfork: one more write costs nothing.
        oom = in_child(score, changes_user=user is not None)
    try:
        popen = subprocess.Popen(
            spec.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT if spec.redirect_stderr else subprocess.PIPE,
            cwd=spec.directory,
            env=env,
            start_new_session=True,
            close_fds=True,
            pass_fds=keep,
            user=user,
            group=group,
            extra_groups=extra_groups,
            umask=-1 if spec.umask is None else spec.umask,
            preexec_fn=_chain(steps, oom),
        )
    except OSError as error:
        _close(ready_fd)
        raise SpawnError(f"{spec.argv[0]}: {error.strerror or error}") from None
    except (ValueError, subprocess.SubprocessError) as error:
        _close(ready_fd)
        raise SpawnError(str(error)) from None
    finally:
        if ready_fd is not None:
            os.close(write_end)  # the child's now: its close (or exit) is the pipe's EOF
    for stream in (popen.stdout, popen.stderr):
        if stream is not None:
            os.set_blocking(stream.fileno(), False)
            _widen_pipe(stream.fileno())
    if score is not None and oom is None:
        # Kept on vfork's fast path (a fork of PID 1 costs ~1.7 ms more for each of the boot's
        # first spawns): written just after the exec. Only what the service starts in those
        # microseconds keeps the pod's value (docs/CATALOGUE.md, "Memory pressure").
        set_score(popen.pid, score)
    # Read back: the write may have been refused (lowering needs CAP_SYS_RESOURCE).
    got = score_of(popen.pid) if score is not None else None
    return ChildProcess(popen=popen, pid=popen.pid, started_at=time.time(),
                        started_mono=time.monotonic(), mark=mark, ready_fd=ready_fd,
                        oom_score_adj=got)


def _close(fd: int | None) -> None:
    if fd is not None:
        os.close(fd)
