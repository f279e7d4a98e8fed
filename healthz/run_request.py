"""The form of a `podctl run` request (POST /v1/run), checked before the engine sees it.

One JSON object, the body of the request (the one route that takes a body: a command line and
its environment do not fit a query string's rules): `name`, `command` (a non-empty list of
strings), `directory` (absolute) and `environment` (an object of strings). What the pod can
run (the directory exists, the executable is on the pod's PATH, the name is free) is the
engine's to say (start.transient). podctl imports this module too, for the same rules.
"""

from __future__ import annotations

import re

from healthz.model import RunRequest
from healthz.names import RULE, is_service_name

# The largest body the control socket reads (aiohttp refuses more with 413 before a handler
# runs); podctl checks it before sending. Enough for any command line a person types.
MAX_BODY = 16 * 1024
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
ENV_RULE = "letters, digits and '_', not starting with a digit"


def env_problem(key: str) -> str | None:
    """Why `key` cannot be an --env variable's name, or None."""
    if ENV_NAME.fullmatch(key) is None:
        return f"bad environment variable name {key!r}: {ENV_RULE}"
    return None


def parse_run_request(data: object) -> RunRequest:
    """The request, or ValueError naming the first thing wrong with it."""
    if not isinstance(data, dict):
        raise ValueError("the body must be a JSON object with name, command, directory")
    name = data.get("name")
    if not isinstance(name, str) or not is_service_name(name):
        raise ValueError(f"bad service name {name!r}: {RULE}")
    command = data.get("command")
    if (not isinstance(command, list) or not command
            or not all(isinstance(word, str) for word in command)):
        raise ValueError("command must be a non-empty list of strings")
    if not command[0]:
        raise ValueError("the command's first word (the program) is empty")
    directory = data.get("directory")
    if not isinstance(directory, str) or not directory.startswith("/"):
        raise ValueError(f"directory must be an absolute path, not {directory!r}")
    environment = data.get("environment", {})
    if not isinstance(environment, dict) or not all(
            isinstance(value, str) for value in environment.values()):
        raise ValueError("environment must be an object of strings")
    for key in environment:
        problem = env_problem(key)
        if problem is not None:
            raise ValueError(problem)
    texts = [*command, directory, *environment.values()]
    if any("\0" in text for text in texts):
        raise ValueError("a NUL byte cannot be passed to a process")
    return RunRequest(name=name, argv=tuple(command), directory=directory,
                      environment=tuple(sorted(environment.items())))
