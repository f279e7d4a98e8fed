"""What the deploy tests read: the Dockerfile's instructions, the Kubernetes manifests, the
nginx main config and the package's console scripts, each parsed once, the checkout's files
being the only source of truth."""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from start.catalogue import Catalogue
from start.catalogue import load as load_catalogue
from tests.support import ROOT

DEPLOY = ROOT / "deploy"
DOCKERFILE = DEPLOY / "Dockerfile"
K8S = DEPLOY / "k8s"
NGINX_CONF = DEPLOY / "nginx" / "nginx.conf"


@dataclass(frozen=True, slots=True)
class Instruction:
    keyword: str  # upper case: FROM, RUN, ENV, …
    arguments: str  # the rest of the logical line, continuations joined
    line: int  # where it starts, for messages


def instructions(text: str) -> list[Instruction]:
    """A Dockerfile's logical lines: comments dropped (also between continued lines, as BuildKit
    does), backslash continuations joined."""
    found: list[Instruction] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if not pending:
            start = number
        continued = stripped.endswith("\\")
        pending.append(stripped[:-1].strip() if continued else stripped)
        if not continued:
            keyword, _, rest = " ".join(pending).partition(" ")
            found.append(Instruction(keyword.upper(), rest.strip(), start))
            pending = []
    return found


@cache
def final_stage() -> tuple[Instruction, ...]:
    """The instructions of the Dockerfile's last stage: the image that runs."""
    every = instructions(DOCKERFILE.read_text())
    last_from = max(i for i, ins in enumerate(every) if ins.keyword == "FROM")
    return tuple(every[last_from:])


def global_args() -> dict[str, str]:
    """The ARGs before the first FROM (the ones FROM lines may use), with their defaults."""
    found: dict[str, str] = {}
    for ins in instructions(DOCKERFILE.read_text()):
        if ins.keyword == "FROM":
            break
        if ins.keyword == "ARG":
            name, _, default = ins.arguments.partition("=")
            found[name] = default
    return found


def only(keyword: str) -> Instruction:
    """The final stage's one instruction `keyword`; fails when there are none or several."""
    matching = [ins for ins in final_stage() if ins.keyword == keyword]
    assert len(matching) == 1, f"the Dockerfile's final stage has {len(matching)} {keyword}"
    return matching[0]


def image_env() -> dict[str, str]:
    """The final stage's ENV, in the `KEY=value` form (the legacy `ENV KEY value` is refused)."""
    env: dict[str, str] = {}
    for ins in final_stage():
        if ins.keyword == "ENV":
            for word in shlex.split(ins.arguments):
                key, sep, value = word.partition("=")
                assert sep, f"Dockerfile:{ins.line}: ENV {word!r} is not KEY=value"
                env[key] = value
    return env


def copies() -> list[tuple[list[str], str, str | None]]:
    """The final stage's COPY instructions: (sources, destination, --from stage or None)."""
    found = []
    for ins in final_stage():
        if ins.keyword == "COPY":
            words = shlex.split(ins.arguments)
            options = [w for w in words if w.startswith("--")]
            paths = [w for w in words if not w.startswith("--")]
            stage = next((o.split("=", 1)[1] for o in options if o.startswith("--from=")), None)
            found.append((paths[:-1], paths[-1], stage))
    return found


def exec_form(ins: Instruction, *, after: str = "") -> list[str]:
    """The JSON argument list of a CMD (or of a HEALTHCHECK after its options and `CMD`)."""
    text = ins.arguments.split(after, 1)[1] if after else ins.arguments
    argv = json.loads(text)
    assert isinstance(argv, list) and all(isinstance(a, str) for a in argv), text
    return argv


@cache
def console_scripts() -> dict[str, str]:
    """[project.scripts] of pyproject.toml: the commands the package installs."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    scripts: dict[str, str] = project["scripts"]
    return scripts


@cache
def kustomization() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    return loaded


def resources() -> list[dict[str, Any]]:
    """Every Kubernetes object of the files kustomization.yaml lists, in order."""
    found: list[dict[str, Any]] = []
    for name in kustomization()["resources"]:
        found.extend(doc for doc in yaml.safe_load_all((K8S / name).read_text()) if doc)
    return found


def resource(kind: str, name: str | None = None) -> dict[str, Any]:
    matching = [r for r in resources()
                if r["kind"] == kind and (name is None or r["metadata"]["name"] == name)]
    assert len(matching) == 1, f"{len(matching)} {kind} {name or ''} in deploy/k8s"
    return matching[0]


def container() -> dict[str, Any]:
    """The StatefulSet's one container."""
    containers = resource("StatefulSet")["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    found: dict[str, Any] = containers[0]
    return found


def container_port(name: str) -> int:
    ports = {p["name"]: p["containerPort"] for p in container()["ports"]}
    assert name in ports, f"the container has no port named {name!r}: {sorted(ports)}"
    return int(ports[name])


def nginx_listen_port() -> int:
    """The port of production nginx's `listen` line (deploy/nginx/nginx.conf)."""
    found = re.findall(r"^\s*listen\s+(?:\S+:)?(\d+)\b", NGINX_CONF.read_text(), re.MULTILINE)
    assert len(found) == 1, f"{NGINX_CONF}: {len(found)} listen lines"
    return int(found[0])


def resolve_env(value: str, env: dict[str, str]) -> str:
    """`$NAME` and `${NAME}` in a Dockerfile value, from the ENV before it."""
    return re.sub(r"\$\{?(\w+)\}?", lambda m: env.get(m.group(1), ""), value)


def under(path: str, directory: str) -> bool:
    return Path(path) == Path(directory) or Path(directory) in Path(path).parents


@cache
def production_catalogue() -> Catalogue:
    """supervisor/ read as in the image: its ENV, and the secrets the cluster provides (their
    presence in the StatefulSet is a test of its own)."""
    environ = {**image_env(), "JWT_SECRET": "from-the-cluster",
               "FDB_CLUSTER_FILE": "/etc/foundationdb/fdb.cluster"}
    return load_catalogue(ROOT / "supervisor", environ=environ, check_executables=False)
