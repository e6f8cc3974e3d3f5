"""Every manifest `tritonctl deploy` generates is valid offline: Kubernetes strict, KServe CRDs closed."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
import yaml

from tritonctl.deploy import DeploySpec, kserve_manifests, kubernetes_manifests

Manifest = dict[str, Any]

# Option sets a user would pass, covering every branch of the generators.
SPECS: dict[str, dict[str, Any]] = {
    "pvc-defaults": {"repository_uri": "pvc://models"},
    "pvc-subpath-namespace-replicas": {
        "repository_uri": "pvc://models/team-a/repo",
        "namespace": "ml",
        "replicas": 3,
    },
    "s3-autoscaled-gpus": {
        "repository_uri": "s3://bucket/models",
        "namespace": "ml",
        "min_replicas": 1,
        "max_replicas": 8,
        "gpus": 2,
        "queue_time_target_us": 500,
        "server_args": ["--log-verbose=1", "--backend-config=python,shm-default-size=2147483648"],
    },
    "gs-image-resources": {
        "repository_uri": "gs://bucket/models",
        "image": "registry.example.com/ml/tritonctl-pytorch:1.2.3",
        "cpu": "500m",
        "memory": "8Gi",
        "shm_size": "4Gi",
        "gpus": 1,
    },
}


def _spec(options: dict[str, Any]) -> DeploySpec:
    options = dict(options)
    return DeploySpec.create("resnet", options.pop("repository_uri"), **options)


def _all_generated() -> list[tuple[str, Manifest]]:
    generated = []
    for label, options in SPECS.items():
        spec = _spec(options)
        for manifest in kubernetes_manifests(spec):
            generated.append((f"k8s-{label}-{manifest['kind']}", manifest))
        for cluster in (False, True):
            for manifest in kserve_manifests(spec, cluster_runtime=cluster):
                generated.append((f"kserve-{label}-cluster{cluster}-{manifest['kind']}", manifest))
    return generated


GENERATED = _all_generated()


@pytest.mark.parametrize("manifest", [m for _, m in GENERATED], ids=[label for label, _ in GENERATED])
def test_generated_manifest_is_valid(manifest: Manifest, validate_any: Callable[[Manifest], None]) -> None:
    validate_any(manifest)


def test_every_kind_is_covered() -> None:
    kinds = {manifest["kind"] for _, manifest in GENERATED}
    assert kinds == {
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "ConfigMap",
        "ServingRuntime",
        "ClusterServingRuntime",
        "InferenceService",
    }


def test_manifests_survive_a_yaml_round_trip(validate_any: Callable[[Manifest], None]) -> None:
    from tritonctl.deploy import manifests_yaml

    manifests = kubernetes_manifests(_spec(SPECS["s3-autoscaled-gpus"]))
    documents = [doc for doc in yaml.safe_load_all(manifests_yaml(manifests)) if doc]
    assert documents == manifests
    for document in documents:
        validate_any(document)


# The validators themselves must be able to fail, or the tests above prove nothing.


def _with_unknown_field(manifest: Manifest, *path: str | int) -> Manifest:
    broken = copy.deepcopy(manifest)
    node: Any = broken
    for key in path:
        node = node[key]
    node["notAField"] = True
    return broken


def test_core_validation_refuses_an_unknown_field(validate_core: Callable[[Manifest], None]) -> None:
    deployment = kubernetes_manifests(_spec(SPECS["pvc-defaults"]))[0]
    broken = _with_unknown_field(deployment, "spec", "template", "spec", "containers", 0)
    with pytest.raises(pytest.fail.Exception, match="notAField"):
        validate_core(broken)


def test_core_validation_refuses_a_wrong_type(validate_core: Callable[[Manifest], None]) -> None:
    service = kubernetes_manifests(_spec(SPECS["pvc-defaults"]))[1]
    broken = copy.deepcopy(service)
    broken["spec"]["ports"][0]["port"] = "eight thousand"
    with pytest.raises(pytest.fail.Exception):
        validate_core(broken)


@pytest.mark.parametrize(
    ("index", "path"),
    [
        (0, ("spec",)),
        (0, ("spec", "containers", 0)),
        (0, ("spec", "containers", 0, "readinessProbe", "httpGet")),
        (1, ("spec", "predictor", "model")),
        (1, ("metadata",)),
    ],
)
def test_kserve_validation_refuses_unknown_fields(
    index: int, path: tuple[str | int, ...], validate_kserve: Callable[[Manifest], None]
) -> None:
    manifest = kserve_manifests(_spec(SPECS["s3-autoscaled-gpus"]))[index]
    with pytest.raises(pytest.fail.Exception, match="notAField"):
        validate_kserve(_with_unknown_field(manifest, *path))


def test_kserve_validation_refuses_a_missing_required_field(
    validate_kserve: Callable[[Manifest], None],
) -> None:
    runtime = copy.deepcopy(kserve_manifests(_spec(SPECS["pvc-defaults"]))[0])
    del runtime["spec"]["containers"]
    with pytest.raises(pytest.fail.Exception, match="containers"):
        validate_kserve(runtime)
