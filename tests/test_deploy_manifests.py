"""deploy/k8s/, checked without a cluster: every object against the Kubernetes schemas of a
pinned version (kubernetes-validate ships them, nothing is fetched), and against what it must
agree with: the health service's routes, the drain deadline, the catalogue, the Dockerfile."""

from __future__ import annotations

import copy
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from start.catalogue import ServiceSpec
from start.cli import parse_args
from tests.deploy_support import (
    K8S,
    container,
    container_port,
    image_env,
    kustomization,
    nginx_listen_port,
    only,
    production_catalogue,
    resource,
    resources,
    under,
)
from tests.health_support import FakePod, default_pod_services, running_faces

# The oldest Kubernetes the manifests promise to work on (GKE's regular channel has it); a
# field newer than this fails here, not at `kubectl apply`.
KUBERNETES_VERSION = "1.30.0"
NAMESPACE = "coditect-app"


def pod_spec() -> dict[str, Any]:
    spec: dict[str, Any] = resource("StatefulSet")["spec"]["template"]["spec"]
    return spec


def env_value(name: str) -> str | None:
    for item in container().get("env", []):
        if item["name"] == name:
            return str(item["value"]) if "value" in item else "<from a Secret>"
    return None


def test_kustomization_lists_every_manifest() -> None:
    """Every YAML file in deploy/k8s/ is a resource of kustomization.yaml (so `kubectl apply -k`
    applies all of them), and the namespace is coditect-app throughout."""
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization()["resources"]) == files
    assert kustomization()["namespace"] == NAMESPACE
    assert {r["metadata"]["namespace"] for r in resources()} == {NAMESPACE}
    kinds = sorted(r["kind"] for r in resources())
    assert kinds == ["NetworkPolicy", "PodDisruptionBudget", "Service", "Service", "StatefulSet"]


@pytest.mark.parametrize("index", range(4))
def test_validates_against_the_kubernetes_schemas(index: int) -> None:
    """Each object is valid for the pinned Kubernetes version, strictly: an unknown field (a
    typo) is an error."""
    obj = resources()[index]
    kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda c: c["livenessProbe"].update(failureTreshold=3),
        lambda c: c["readinessProbe"]["httpGet"].update(port=[8081]),
        lambda c: c.update(imagePullPolicy=True),
    ],
    ids=["misspelt-field", "wrong-shape", "wrong-type"],
)
def test_the_schema_check_bites(mutate: Callable[[dict[str, Any]], None]) -> None:
    """The same check refuses the StatefulSet with a typo, so its pass means something."""
    statefulset = copy.deepcopy(resource("StatefulSet"))
    mutate(statefulset["spec"]["template"]["spec"]["containers"][0])
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(statefulset, KUBERNETES_VERSION, strict=True)


def test_names_and_selectors_fit_together() -> None:
    """The StatefulSet is coditect-combined, governed by a headless Service; both Services and
    the PodDisruptionBudget select its pods and target ports the container has."""
    statefulset = resource("StatefulSet", "coditect-combined")
    labels = statefulset["spec"]["template"]["metadata"]["labels"]
    assert statefulset["spec"]["selector"]["matchLabels"].items() <= labels.items()
    governing = resource("Service", statefulset["spec"]["serviceName"])
    assert governing["spec"]["clusterIP"] == "None"
    for service in (r for r in resources() if r["kind"] == "Service"):
        assert service["spec"]["selector"].items() <= labels.items()
        for port in service["spec"]["ports"]:
            container_port(port["targetPort"])
    budget = resource("PodDisruptionBudget")
    assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()


@cache
def probes() -> dict[str, dict[str, Any]]:
    return {kind: container()[f"{kind}Probe"] for kind in ("startup", "liveness", "readiness")}


def test_probes_use_the_health_port_of_the_image_and_of_the_engine() -> None:
    """Every probe asks the container's `health` port, which is the image's
    CODITECT_HEALTH_ADDR port and coditect-start's default."""
    port = container_port("health")
    assert image_env()["CODITECT_HEALTH_ADDR"] == f"0.0.0.0:{port}"
    assert parse_args([], {}).health_addr == f"0.0.0.0:{port}"
    for kind, probe in probes().items():
        assert probe["httpGet"]["port"] in ("health", port), kind


async def test_probe_paths_are_served_by_the_health_service(tmp_path: Path) -> None:
    """The real health app answers each probe path 200 on a ready pod; while it boots the
    liveness path still answers 200 (the kubelet must not kill a pod for booting) and the
    startup and readiness paths 503."""
    pod = FakePod(default_pod_services())
    paths = {kind: probe["httpGet"]["path"] for kind, probe in probes().items()}
    async with running_faces(pod, tmp_path) as faces:
        booting = {kind: (await faces.get("tcp", path))[0] for kind, path in paths.items()}
        assert booting == {"startup": 503, "liveness": 200, "readiness": 503}
        pod.all_ready()
        for kind, path in paths.items():
            assert await faces.get("tcp", path) == (200, "ok\n"), kind
        assert (await faces.get("tcp", "/no-such-probe"))[0] == 404


def window(probe: dict[str, Any]) -> int:
    """How long a probe keeps failing before the kubelet acts, in seconds."""
    return int(probe.get("periodSeconds", 10)) * int(probe.get("failureThreshold", 3))


def test_probe_timing() -> None:
    """Liveness is more patient than readiness; the startup probe waits out the slowest
    critical service's start_timeout; every probe's timeout fits its period."""
    assert window(probes()["liveness"]) > window(probes()["readiness"])
    slowest = max(s.health.start_timeout for s in production_catalogue().services
                  if s.health.critical)
    assert window(probes()["startup"]) >= slowest
    for kind, probe in probes().items():
        assert probe["timeoutSeconds"] < probe["periodSeconds"], kind


def drain_path_seconds(services: tuple[ServiceSpec, ...]) -> float:
    """The longest chain of stopwaitsecs the drain may have to wait out: a service stops only
    once everything that starts `after` it has stopped."""
    dependants: dict[str, list[ServiceSpec]] = {s.name: [] for s in services}
    for spec in services:
        for name in spec.health.after:
            dependants[name].append(spec)

    @cache
    def longest(name: str) -> float:
        spec = next(s for s in services if s.name == name)
        before = max((longest(d.name) for d in dependants[name]), default=0.0)
        return before + spec.stopwaitsecs

    return max(longest(s.name) for s in services)


def test_grace_period_exceeds_the_drain_deadline() -> None:
    """terminationGracePeriodSeconds is above the drain deadline the container gets (its
    CODITECT_DRAIN_TIMEOUT, else coditect-start's default), and the catalogue's slowest stop
    order fits inside that deadline."""
    grace = pod_spec()["terminationGracePeriodSeconds"]
    configured = env_value("CODITECT_DRAIN_TIMEOUT") or image_env().get("CODITECT_DRAIN_TIMEOUT")
    drain = parse_args([], {"CODITECT_DRAIN_TIMEOUT": configured} if configured else {})
    assert grace > drain.drain_timeout
    assert drain_path_seconds(production_catalogue().services) <= drain.drain_timeout


def test_the_termination_message_is_the_engines_reason() -> None:
    """The kubelet's file is the one coditect-start writes by default, and a container that
    died before writing it still leaves a message (its log's tail)."""
    coditect = container()
    assert coditect["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert coditect.get("terminationMessagePath", "/dev/termination-log") == \
        "/dev/termination-log"


def test_security_context() -> None:
    """Non-root as the image's user, no privilege escalation, no capabilities, read-only root
    filesystem; nginx's port needs no sysctl (or, were it below 1024, the one that lets it bind
    without root); the Services expose it as port 80."""
    pod = pod_spec()["securityContext"]
    uid, gid = (int(n) for n in only("USER").arguments.split(":"))
    assert pod["runAsNonRoot"] is True
    assert (pod["runAsUser"], pod["runAsGroup"], pod["fsGroup"]) == (uid, gid, gid)
    assert pod["seccompProfile"]["type"] == "RuntimeDefault"
    own = container()["securityContext"]
    assert own["allowPrivilegeEscalation"] is False
    assert own["readOnlyRootFilesystem"] is True
    assert own["capabilities"]["drop"] == ["ALL"]
    assert "add" not in own["capabilities"]
    listen = nginx_listen_port()
    assert container_port("http") == listen
    if listen < 1024:
        sysctls = {s["name"]: int(s["value"]) for s in pod.get("sysctls", [])}
        assert sysctls.get("net.ipv4.ip_unprivileged_port_start", 1024) <= listen
    for service in (r for r in resources() if r["kind"] == "Service"):
        assert [(p["port"], p["targetPort"]) for p in service["spec"]["ports"]] == [(80, "http")]


def test_what_the_pod_writes_is_mounted() -> None:
    """With a read-only root filesystem, every directory the pod writes is a volume: .coditect
    and the workspace are claims that outlive the pod, the run directory (nginx's prefix, the
    control socket), /tmp and the home directory are scratch."""
    env = image_env()
    mounts = {m["mountPath"]: m for m in container()["volumeMounts"]}
    volumes = {v["name"]: v for v in pod_spec()["volumes"]}
    claims = {c["metadata"]["name"]: c for c in resource("StatefulSet")["spec"]
              ["volumeClaimTemplates"]}
    for path in (env["CODITECT_HOME"], env["CODITECT_WORKSPACE"]):
        assert mounts[path]["name"] in claims, path
        assert claims[mounts[path]["name"]]["spec"]["accessModes"] == ["ReadWriteOnce"]
    for path in (env["CODITECT_RUN"], "/tmp", "/home/coder"):
        assert "emptyDir" in volumes[mounts[path]["name"]], path
    for mount in mounts.values():
        assert mount["name"] in volumes or mount["name"] in claims, mount


def test_the_catalogue_finds_what_it_requires() -> None:
    """Each variable a service `requires_env` is set in the container, and the FDB cluster file
    is on a mounted volume."""
    required = {name for spec in production_catalogue().services
                for name in spec.health.requires_env}
    assert required, "the catalogue requires no environment: the test is out of date"
    for name in required:
        assert env_value(name) is not None, name
    cluster_file = env_value("FDB_CLUSTER_FILE")
    assert cluster_file is not None
    assert any(under(cluster_file, m["mountPath"]) for m in container()["volumeMounts"])


def gibibytes(quantity: str) -> float:
    units = {"Mi": 1 / 1024, "Gi": 1.0}
    return float(quantity[:-2]) * units[quantity[-2:]]


def test_resources_are_bounded() -> None:
    """Requests for scheduling and a memory limit (a runaway build cannot take the node); the
    ephemeral-storage limit holds the disk-backed scratch volumes, so filling them evicts no
    pod before a volume's own limit is reached."""
    resources_ = container()["resources"]
    assert {"cpu", "memory"} <= set(resources_["requests"])
    assert "memory" in resources_["limits"]
    scratch = sum(gibibytes(v["emptyDir"]["sizeLimit"]) for v in pod_spec()["volumes"]
                  if "emptyDir" in v and v["emptyDir"].get("medium") != "Memory")
    assert gibibytes(resources_["limits"]["ephemeral-storage"]) > scratch


def test_network_policy_admits_only_nginx_and_health() -> None:
    """Other pods reach this one only on nginx's port and the health port: a backend bound to
    every interface by mistake is still not a door past nginx."""
    policy = resource("NetworkPolicy")["spec"]
    labels = resource("StatefulSet")["spec"]["template"]["metadata"]["labels"]
    assert policy["policyTypes"] == ["Ingress"]
    assert policy["podSelector"]["matchLabels"].items() <= labels.items()
    ports = [port for rule in policy["ingress"] for port in rule["ports"]]
    named = {p["name"] for p in container()["ports"]}
    assert {p["port"] for p in ports} == {"http", "health"} <= named
    assert all("from" not in rule for rule in policy["ingress"])  # any source, these ports


def test_backends_listen_on_loopback_only() -> None:
    """Theia and codi2 are told to bind 127.0.0.1: nginx, on the same loopback, is their only
    door, and nothing in the pod's commands binds every interface."""
    catalogue = production_catalogue()
    for name, flag in (("theia", "--hostname=127.0.0.1"), ("codi2", "127.0.0.1")):
        spec = catalogue.get(name)
        assert spec is not None and flag in spec.argv, spec
    for spec in catalogue.services:
        assert not {"0.0.0.0", "::", "[::]"} & {part.rpartition("=")[2] for part in spec.argv}
