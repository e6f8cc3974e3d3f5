"""What one deployment of the server needs: the user's choices, checked before any manifest is built.

`DeploySpec` is the one object both generators (`kserve.py`, `kubernetes.py`) take, so the CLI stays a
thin layer: it fills a spec and hands it over.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from server.errors import ConfigError
from tritonctl import __version__

# Kubernetes object names (RFC 1123 label); 63 is the label limit, and every name we derive is used as a
# label value too.
_NAME_PATTERN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_NAME_MAX = 50  # leaves room for the suffixes we add ("-runtime", "-predictor-...")
# Kubernetes resource quantities ("1", "500m", "2Gi", "1.5G").
_QUANTITY_PATTERN = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$")
# Schemes KServe's storage initializer downloads from (its docs list these); pvc:// is mounted directly.
REMOTE_SCHEMES = ("s3", "gs", "https", "http", "hdfs", "webhdfs", "hf", "oci")

CPU_IMAGE = f"tritonctl:{__version__}"
GPU_IMAGE = f"tritonctl-pytorch:{__version__}"


@dataclass(frozen=True)
class RepositorySource:
    """Where the model repository comes from: a PersistentVolumeClaim, or a URI to download."""

    uri: str
    claim: str | None = None  # pvc://CLAIM/SUB/PATH -> CLAIM
    sub_path: str = ""  # ... -> SUB/PATH (mounted as the repository root)

    @property
    def is_volume(self) -> bool:
        return self.claim is not None


def parse_repository_uri(uri: str) -> RepositorySource:
    """Split REPO_URI into a PVC mount or a download source; anything else is a clear ConfigError."""
    parts = urlsplit(uri)
    if parts.scheme == "pvc":
        if not parts.netloc or not _NAME_PATTERN.match(parts.netloc):
            raise ConfigError(f"'{uri}': expected pvc://CLAIM[/PATH] with a valid claim name")
        sub_path = parts.path.strip("/")
        if ".." in sub_path.split("/"):
            raise ConfigError(f"'{uri}': the path inside the claim may not contain '..'")
        return RepositorySource(uri=uri, claim=parts.netloc, sub_path=sub_path)
    if parts.scheme in REMOTE_SCHEMES and (parts.netloc or parts.path):
        return RepositorySource(uri=uri)
    schemes = ", ".join(f"{scheme}://" for scheme in ("pvc", *REMOTE_SCHEMES))
    raise ConfigError(
        f"'{uri}' is not a repository URI a cluster can reach; use one of {schemes} "
        "(a local folder must first be copied to a volume or a bucket)"
    )


@dataclass(frozen=True)
class DeploySpec:
    """Everything the manifests depend on. Build with `DeploySpec.create(...)` to get it checked."""

    name: str
    repository: RepositorySource
    image: str
    namespace: str | None = None
    replicas: int = 1
    min_replicas: int | None = None  # both set -> autoscaled between them
    max_replicas: int | None = None
    gpus: int = 0
    cpu: str = "1"
    memory: str = "2Gi"
    shm_size: str = "1Gi"  # /dev/shm for models' own POSIX shared memory (the arenas are memfd)
    queue_time_target_us: int = 1000  # average queue time per request that triggers a scale-out
    server_args: tuple[str, ...] = field(default_factory=tuple)  # extra `tritonserver` flags

    @property
    def autoscaled(self) -> bool:
        return self.min_replicas is not None and self.max_replicas is not None

    @classmethod
    def create(
        cls,
        name: str,
        repository_uri: str,
        *,
        image: str | None = None,
        namespace: str | None = None,
        replicas: int = 1,
        min_replicas: int | None = None,
        max_replicas: int | None = None,
        gpus: int = 0,
        cpu: str = "1",
        memory: str = "2Gi",
        shm_size: str = "1Gi",
        queue_time_target_us: int = 1000,
        server_args: tuple[str, ...] | list[str] = (),
    ) -> DeploySpec:
        """Check every choice and return the spec; raises ConfigError naming the bad value."""
        _check_name("name", name)
        if namespace is not None:
            _check_name("namespace", namespace)
        if replicas < 1:
            raise ConfigError(f"--replicas must be at least 1, got {replicas}")
        if (min_replicas is None) != (max_replicas is None):
            # One bound alone would leave the other to a guess; autoscaling needs both.
            raise ConfigError("give both --min and --max to autoscale, or neither")
        if min_replicas is not None and max_replicas is not None:
            if min_replicas < 1:
                raise ConfigError(f"--min must be at least 1, got {min_replicas}")
            if max_replicas < min_replicas:
                raise ConfigError(f"--max ({max_replicas}) must not be below --min ({min_replicas})")
        if gpus < 0:
            raise ConfigError(f"--gpus must not be negative, got {gpus}")
        for option, quantity in (("--cpu", cpu), ("--memory", memory), ("--shm-size", shm_size)):
            if not _QUANTITY_PATTERN.match(quantity):
                raise ConfigError(f"{option} '{quantity}' is not a Kubernetes quantity (e.g. 2, 500m, 4Gi)")
        if queue_time_target_us < 1:
            raise ConfigError(f"--queue-target-us must be positive, got {queue_time_target_us}")
        return cls(
            name=name,
            repository=parse_repository_uri(repository_uri),
            image=image or (GPU_IMAGE if gpus else CPU_IMAGE),
            namespace=namespace,
            replicas=replicas,
            min_replicas=min_replicas,
            max_replicas=max_replicas,
            gpus=gpus,
            cpu=cpu,
            memory=memory,
            shm_size=shm_size,
            queue_time_target_us=queue_time_target_us,
            server_args=tuple(server_args),
        )


def _check_name(what: str, value: str) -> None:
    if len(value) > _NAME_MAX or not _NAME_PATTERN.match(value):
        raise ConfigError(
            f"{what} '{value}' is not a valid Kubernetes name: lower-case letters, digits and '-', "
            f"starting and ending with a letter or digit, at most {_NAME_MAX} characters"
        )
