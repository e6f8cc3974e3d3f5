"""`tritonctl deploy kserve|k8s REPO_URI`: manifests that run the server on Kubernetes.

Exit codes: 0 written, 2 a bad option or repository URI (the message says which).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

if TYPE_CHECKING:
    from tritonctl.deploy import DeploySpec
    from tritonctl.deploy.pod import Manifest

T = TypeVar("T")

deploy_app = typer.Typer(
    name="deploy",
    help="Generate Kubernetes or KServe manifests that serve a model repository. Nothing is applied: "
    "review the YAML, then `kubectl apply -f`.",
    no_args_is_help=True,
)

RepoUri = Annotated[
    str,
    typer.Argument(
        help="Where the cluster finds the repository: pvc://CLAIM/PATH, s3://, gs://, https://, hf:// ...",
        show_default=False,
    ),
]
Name = Annotated[str, typer.Option("--name", help="Name of the objects (a Kubernetes name).")]
Namespace = Annotated[
    str | None, typer.Option("--namespace", "-n", help="Namespace to put them in (default: kubectl's).")
]
Replicas = Annotated[int, typer.Option("--replicas", help="Fixed number of server replicas.")]
MinReplicas = Annotated[
    int | None, typer.Option("--min", help="Autoscale: fewest replicas (needs --max).", show_default=False)
]
MaxReplicas = Annotated[
    int | None, typer.Option("--max", help="Autoscale: most replicas (needs --min).", show_default=False)
]
Gpus = Annotated[int, typer.Option("--gpus", help="GPUs per replica (nvidia.com/gpu).")]
Image = Annotated[
    str | None,
    typer.Option(
        "--image",
        help="Server image built from this repository's Dockerfile (default: tritonctl:VERSION, "
        "or tritonctl-pytorch:VERSION with --gpus).",
        show_default=False,
    ),
]
Cpu = Annotated[str, typer.Option("--cpu", help="CPU request per replica.")]
Memory = Annotated[str, typer.Option("--memory", help="Memory request per replica.")]
ShmSize = Annotated[
    str,
    typer.Option(
        "--shm-size",
        help="Size of /dev/shm, for models that use POSIX shared memory. The server's tensor arenas "
        "are not there: they are container memory, so size --memory for them.",
    ),
]
QueueTarget = Annotated[
    int,
    typer.Option("--queue-target-us", help="Autoscale: average queue time per request to hold (µs)."),
]
ServerArgs = Annotated[
    list[str] | None,
    typer.Option(
        "--server-arg",
        help="Extra `tritonserver` flag, repeatable, e.g. --server-arg=--log-verbose=1.",
        show_default=False,
    ),
]
OutputDir = Annotated[
    Path | None,
    typer.Option(
        "--output-dir",
        "-o",
        help="Write one file per object here instead of printing one YAML stream.",
        show_default=False,
    ),
]


@deploy_app.command("k8s")
def deploy_kubernetes(
    repo_uri: RepoUri,
    *,
    name: Name = "tritonctl",
    namespace: Namespace = None,
    replicas: Replicas = 1,
    min_replicas: MinReplicas = None,
    max_replicas: MaxReplicas = None,
    gpus: Gpus = 0,
    image: Image = None,
    cpu: Cpu = "1",
    memory: Memory = "2Gi",
    shm_size: ShmSize = "1Gi",
    queue_target_us: QueueTarget = 1000,
    server_arg: ServerArgs = None,
    storage_initializer_image: Annotated[
        str,
        typer.Option(help="Init container that downloads a non-pvc:// REPO_URI (KServe's downloader)."),
    ] = "kserve/storage-initializer:v0.16.0",
    output_dir: OutputDir = None,
) -> None:
    """Deployment and Service; with --min/--max an HPA on queue time and its prometheus-adapter rule."""
    from tritonctl.deploy import kubernetes_manifests

    spec = _spec(
        name=name, repo_uri=repo_uri, namespace=namespace, replicas=replicas, min_replicas=min_replicas,
        max_replicas=max_replicas, gpus=gpus, image=image, cpu=cpu, memory=memory, shm_size=shm_size,
        queue_target_us=queue_target_us, server_args=server_arg,
    )  # fmt: skip
    manifests = _or_exit(
        lambda: kubernetes_manifests(spec, storage_initializer_image=storage_initializer_image)
    )
    _emit(manifests, output_dir)


@deploy_app.command("kserve")
def deploy_kserve(
    repo_uri: RepoUri,
    *,
    name: Name = "tritonctl",
    namespace: Namespace = None,
    replicas: Replicas = 1,
    min_replicas: MinReplicas = None,
    max_replicas: MaxReplicas = None,
    gpus: Gpus = 0,
    image: Image = None,
    cpu: Cpu = "1",
    memory: Memory = "2Gi",
    shm_size: ShmSize = "1Gi",
    queue_target_us: QueueTarget = 1000,
    server_arg: ServerArgs = None,
    runtime_name: Annotated[str, typer.Option(help="Name of the serving runtime.")] = "tritonctl",
    cluster_runtime: Annotated[
        bool, typer.Option(help="Emit a ClusterServingRuntime (all namespaces) instead of a ServingRuntime.")
    ] = False,
    prometheus_url: Annotated[
        str, typer.Option(help="Autoscale: Prometheus that KEDA queries for the queue time.")
    ] = "http://prometheus-operated.monitoring.svc:9090",
    output_dir: OutputDir = None,
) -> None:
    """ServingRuntime and InferenceService; with --min/--max, KEDA autoscaling on queue time."""
    from tritonctl.deploy import kserve_manifests

    spec = _spec(
        name=name, repo_uri=repo_uri, namespace=namespace, replicas=replicas, min_replicas=min_replicas,
        max_replicas=max_replicas, gpus=gpus, image=image, cpu=cpu, memory=memory, shm_size=shm_size,
        queue_target_us=queue_target_us, server_args=server_arg,
    )  # fmt: skip
    manifests = _or_exit(
        lambda: kserve_manifests(
            spec, runtime_name=runtime_name, cluster_runtime=cluster_runtime, prometheus_url=prometheus_url
        )
    )
    _emit(manifests, output_dir)


def _spec(
    *,
    name: str,
    repo_uri: str,
    namespace: str | None,
    replicas: int,
    min_replicas: int | None,
    max_replicas: int | None,
    gpus: int,
    image: str | None,
    cpu: str,
    memory: str,
    shm_size: str,
    queue_target_us: int,
    server_args: list[str] | None,
) -> DeploySpec:
    from tritonctl.deploy import DeploySpec

    return _or_exit(
        lambda: DeploySpec.create(
            name,
            repo_uri,
            image=image,
            namespace=namespace,
            replicas=replicas,
            min_replicas=min_replicas,
            max_replicas=max_replicas,
            gpus=gpus,
            cpu=cpu,
            memory=memory,
            shm_size=shm_size,
            queue_time_target_us=queue_target_us,
            server_args=server_args or [],
        )
    )


def _or_exit(build: Callable[[], T]) -> T:
    from server.errors import ConfigError

    try:
        return build()
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc


def _emit(manifests: list[Manifest], output_dir: Path | None) -> None:
    from tritonctl.deploy import manifests_yaml, write_manifests

    if output_dir is None:
        typer.echo(manifests_yaml(manifests), nl=False)
        return
    for path in write_manifests(manifests, output_dir):
        typer.echo(f"wrote {path}", err=True)


def register(app: typer.Typer) -> None:
    app.add_typer(deploy_app)
