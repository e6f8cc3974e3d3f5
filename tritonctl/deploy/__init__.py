"""Kubernetes and KServe manifests for the server (`tritonctl deploy`): generated, never applied here."""

from __future__ import annotations

from tritonctl.deploy.kserve import kserve_manifests
from tritonctl.deploy.kubernetes import kubernetes_manifests
from tritonctl.deploy.output import manifests_yaml, write_manifests
from tritonctl.deploy.spec import DeploySpec, RepositorySource, parse_repository_uri

__all__ = [
    "DeploySpec",
    "RepositorySource",
    "kserve_manifests",
    "kubernetes_manifests",
    "manifests_yaml",
    "parse_repository_uri",
    "write_manifests",
]
