"""The server container as Kubernetes sees it: args, ports, probes, resources, security, /dev/shm.

Shared by the plain-Kubernetes and the KServe generators so both run the server the same way. The
container runs the image's `tritonserver` entry point (docker/tritonserver), which binds 0.0.0.0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from server.errors import ConfigError
from tritonctl.deploy.spec import DeploySpec

Manifest = dict[str, Any]

HEALTH_LIVE_PATH = "/v2/health/live"
HEALTH_READY_PATH = "/v2/health/ready"
METRICS_PATH = "/metrics"
GPU_RESOURCE = "nvidia.com/gpu"
# The non-root user the images create (Dockerfile, Dockerfile.pytorch); numeric so that the kubelet can
# enforce runAsNonRoot.
SERVER_UID = 10001
SHM_VOLUME = "dshm"
# How long the server may take to load its models before the kubelet gives up: 60 x 10 s.
STARTUP_PERIOD_S = 10
STARTUP_FAILURES = 60
# Kubernetes waits this long after SIGTERM; the server drains for --exit-timeout-secs (30) first.
TERMINATION_GRACE_S = 40


ALL_INTERFACES = "0.0.0.0"
# What the images' `tritonserver` script (docker/tritonserver) puts before the caller's arguments.
ENTRYPOINT_DEFAULT_ARGS = (f"--host={ALL_INTERFACES}",)


@dataclass(frozen=True)
class ServerPorts:
    http: int
    grpc: int
    metrics: int


# Triton's ports for a plain Deployment; KServe expects HTTP on 8080 and gRPC on 9000.
KUBERNETES_PORTS = ServerPorts(http=8000, grpc=8001, metrics=8002)
KSERVE_PORTS = ServerPorts(http=8080, grpc=9000, metrics=8002)


def server_args(model_repository: str, ports: ServerPorts, extra: tuple[str, ...] = ()) -> list[str]:
    """The container args: the image's `tritonserver` entry point with Triton's own flag spellings."""
    return [
        "tritonserver",
        f"--model-repository={model_repository}",
        f"--http-port={ports.http}",
        f"--grpc-port={ports.grpc}",
        f"--metrics-port={ports.metrics}",
        *extra,
    ]


def check_server_args(args: list[str], model_repository: str, ports: ServerPorts) -> None:
    """Parse the args with the server's own parser, so a typo in --server-arg fails here, not in a pod.

    Also refuses extra flags that would move the ports, listeners or the repository away from what
    the probes, the Service and the volume mount point at.
    """
    from server.options import parse_tritonserver_args  # the server's parser; light, but not CLI start-up

    # What the pod runs: the entry point's own defaults first, then these args.
    options = parse_tritonserver_args([*ENTRYPOINT_DEFAULT_ARGS, *args[1:]])  # ConfigError names the flag
    listeners = {
        "--http-address": options.http_host,
        "--grpc-address": options.grpc_host,
        "--metrics-address": options.metrics_host,
    }
    for flag, host in listeners.items():
        if host != ALL_INTERFACES:
            raise ConfigError(
                f"{flag} / --host {host} in --server-arg would hide the server from its pod's IP"
            )
    if not (options.allow_http and options.allow_grpc and options.allow_metrics):
        raise ConfigError(
            "--allow-http/--allow-grpc/--allow-metrics=false would break the probes, Service or scaling"
        )
    expected = {
        "--http-port": (options.http_port, ports.http),
        "--grpc-port": (options.grpc_port, ports.grpc),
        "--metrics-port": (options.metrics_port, ports.metrics),
    }
    for flag, (actual, wanted) in expected.items():
        if actual != wanted:
            raise ConfigError(
                f"{flag}={actual} in --server-arg would not match the probes and ports ({wanted})"
            )
    repositories = [str(path) for path in options.model_repositories]
    if repositories != [model_repository]:
        raise ConfigError(
            f"--model-repository is set by the generator ({model_repository}); got {repositories}"
        )


def http_probe(path: str, port: int, *, period_s: int, failure_threshold: int) -> Manifest:
    return {
        "httpGet": {"path": path, "port": port},
        "periodSeconds": period_s,
        "failureThreshold": failure_threshold,
        "timeoutSeconds": 5,
    }


def readiness_probe(port: int) -> Manifest:
    return http_probe(HEALTH_READY_PATH, port, period_s=5, failure_threshold=3)


def liveness_probe(port: int) -> Manifest:
    return http_probe(HEALTH_LIVE_PATH, port, period_s=10, failure_threshold=3)


def startup_probe(port: int) -> Manifest:
    # Ready, not live: liveness checks begin only once every model has loaded, however long that takes.
    return http_probe(HEALTH_READY_PATH, port, period_s=STARTUP_PERIOD_S, failure_threshold=STARTUP_FAILURES)


def resources(spec: DeploySpec) -> Manifest:
    """Requests for CPU and memory; GPUs as a limit (extended resources take their request from it)."""
    result: Manifest = {"requests": {"cpu": spec.cpu, "memory": spec.memory}}
    if spec.gpus:
        result["limits"] = {GPU_RESOURCE: str(spec.gpus)}
    return result


def gpu_tolerations(spec: DeploySpec) -> list[Manifest]:
    # GPU node pools are commonly tainted with the resource name so that other pods stay off them.
    if not spec.gpus:
        return []
    return [{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}]


def security_context(run_as: int | None = SERVER_UID) -> Manifest:
    """Kubernetes' "restricted" Pod Security Standard; `run_as` None keeps the image's own user."""
    result: Manifest = {"runAsNonRoot": True}
    if run_as is not None:
        result |= {"runAsUser": run_as, "runAsGroup": run_as}
    return result | {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def shm_volume(spec: DeploySpec) -> Manifest:
    # Not for the server's tensor arenas: those are memfd (server/workers/shm.py), outside /dev/shm, and
    # count as the container's memory (size --memory for them). This serves models and libraries using
    # POSIX shared memory (torch multiprocessing, for one), which a 64 MiB container /dev/shm would stop.
    return {"name": SHM_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": spec.shm_size}}


def shm_mount() -> Manifest:
    return {"name": SHM_VOLUME, "mountPath": "/dev/shm"}


def labels(spec: DeploySpec) -> dict[str, str]:
    return {**selector_labels(spec), "app.kubernetes.io/managed-by": "tritonctl"}


def selector_labels(spec: DeploySpec) -> dict[str, str]:
    return {"app.kubernetes.io/name": "tritonctl", "app.kubernetes.io/instance": spec.name}


def metadata(
    name: str,
    namespace: str | None,
    *,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
) -> Manifest:
    result: Manifest = {"name": name}
    if namespace:
        result["namespace"] = namespace
    if labels:
        result["labels"] = dict(labels)
    if annotations:
        result["annotations"] = dict(annotations)
    return result


def prometheus_annotations(ports: ServerPorts) -> dict[str, str]:
    """The widely used scrape annotations (Prometheus' kubernetes-pods job reads them)."""
    return {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(ports.metrics),
        "prometheus.io/path": METRICS_PATH,
    }
