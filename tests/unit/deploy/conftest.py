"""Offline validators for generated manifests: Kubernetes' own schemas and KServe's CRD schemas.

Core kinds go through `kubernetes-validate` in strict mode (unknown fields refused) against the newest
Kubernetes it ships. KServe kinds go through the CRD schemas vendored in `tests/data/kserve-crds`
(version and licence in its SOURCE.md), closed here so that unknown fields are refused too, with their
`metadata` checked against Kubernetes' strict ObjectMeta.
"""

from __future__ import annotations

import copy
import json
import subprocess
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from referencing import Registry, Resource

REPO_ROOT = Path(__file__).resolve().parents[3]
# Vendored: a clone carries every file its tests read.
KSERVE_CRD_DIR = REPO_ROOT / "tests" / "data" / "kserve-crds"
KSERVE_CRD_FILES = {
    "ServingRuntime": "serving.kserve.io_servingruntimes.yaml",
    "ClusterServingRuntime": "serving.kserve.io_clusterservingruntimes.yaml",
    "InferenceService": "serving.kserve.io_inferenceservices.yaml",
}
OBJECT_META_REF = (
    "https://kubernetes.io/api/_definitions.json#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
)

Manifest = dict[str, Any]


def kserve_crd_dir() -> Path:
    """The vendored CRDs; a missing one is an error, never a skip."""
    missing = [name for name in KSERVE_CRD_FILES.values() if not (KSERVE_CRD_DIR / name).is_file()]
    if missing:
        pytest.fail(f"KServe CRD schemas missing from {KSERVE_CRD_DIR}: {', '.join(missing)}", pytrace=False)
    return KSERVE_CRD_DIR


def close_objects(schema: Any) -> Any:
    """Refuse unknown fields: every object schema that lists its properties gets additionalProperties
    false, unless the CRD says the object keeps unknown fields."""
    if isinstance(schema, list):
        return [close_objects(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    closed = {key: close_objects(value) for key, value in schema.items()}
    if (
        "properties" in closed
        and "additionalProperties" not in closed
        and not closed.get("x-kubernetes-preserve-unknown-fields")
    ):
        closed["additionalProperties"] = False
    return closed


def _kubernetes_definitions() -> dict[str, Any]:
    version = kubernetes_validate.latest_version()
    path = resources.files("kubernetes_validate") / "kubernetes-json-schema" / f"v{version}-local-strict"
    return json.loads((path / "_definitions.json").read_text(encoding="utf-8"))  # type: ignore[no-any-return]


@pytest.fixture(scope="session")
def validate_core() -> Callable[[Manifest], None]:
    """Strict validation of a core Kubernetes object against the newest Kubernetes release shipped."""
    version = kubernetes_validate.latest_version()

    def validate(manifest: Manifest) -> None:
        try:
            kubernetes_validate.validate(copy.deepcopy(manifest), version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = "/".join(str(part) for part in exc.path)
            pytest.fail(f"{manifest['kind']} is invalid at '{path}': {exc.message}", pytrace=False)

    return validate


@pytest.fixture(scope="session")
def validate_kserve() -> Callable[[Manifest], None]:
    """Validation of a KServe object against its CRD's closed schema (served version, group, kind)."""
    registry: Registry[Any] = Resource.from_contents(_kubernetes_definitions()) @ Registry()
    validators: dict[str, tuple[str, jsonschema.protocols.Validator]] = {}
    crd_dir = kserve_crd_dir()
    for kind, filename in KSERVE_CRD_FILES.items():
        # libyaml when present: the InferenceService CRD is 2 MB, seconds for the pure-Python loader.
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        crd = yaml.load((crd_dir / filename).read_text(encoding="utf-8"), Loader=loader)
        assert crd["spec"]["names"]["kind"] == kind
        (version,) = [v for v in crd["spec"]["versions"] if v.get("served") and v.get("storage")]
        schema = close_objects(version["schema"]["openAPIV3Schema"])
        schema["properties"]["metadata"] = {"$ref": OBJECT_META_REF}
        schema["required"] = sorted({*schema.get("required", []), "apiVersion", "kind", "metadata", "spec"})
        api_version = f"{crd['spec']['group']}/{version['name']}"
        validators[kind] = (api_version, jsonschema.Draft202012Validator(schema, registry=registry))

    def validate(manifest: Manifest) -> None:
        assert manifest["kind"] in validators, f"not a KServe kind: {manifest['kind']}"
        api_version, validator = validators[manifest["kind"]]
        assert manifest["apiVersion"] == api_version
        errors = sorted(validator.iter_errors(manifest), key=lambda error: list(error.path))
        if errors:
            lines = [f"{'/'.join(str(p) for p in error.path)}: {error.message}" for error in errors[:10]]
            pytest.fail(f"{manifest['kind']} is invalid:\n" + "\n".join(lines), pytrace=False)

    return validate


@pytest.fixture(scope="session")
def validate_any(
    validate_core: Callable[[Manifest], None], validate_kserve: Callable[[Manifest], None]
) -> Callable[[Manifest], None]:
    def validate(manifest: Manifest) -> None:
        if manifest["kind"] in KSERVE_CRD_FILES:
            validate_kserve(manifest)
        else:
            validate_core(manifest)

    return validate


ENTRYPOINT = REPO_ROOT / "docker" / "tritonserver"


@pytest.fixture
def run_entrypoint(tmp_path: Path) -> Callable[[list[str]], list[str]]:
    """Run the image's `tritonserver` script outside a container, with a stand-in python that records
    the argv it would have been given; returns that argv (e.g. ["-m", "server", "--host=0.0.0.0", ...])."""
    record = tmp_path / "argv.txt"
    fake_python = tmp_path / "python3"
    fake_python.write_text('#!/bin/sh\nfor arg in "$@"; do printf \'%s\\n\' "$arg"; done > "$ARGV_RECORD"\n')
    fake_python.chmod(0o755)

    def run(args: list[str]) -> list[str]:
        env = {"PATH": "/usr/bin:/bin", "TRITONCTL_PYTHON": str(fake_python), "ARGV_RECORD": str(record)}
        subprocess.run([str(ENTRYPOINT), *args], env=env, check=True, timeout=30)
        return record.read_text(encoding="utf-8").splitlines()

    return run
