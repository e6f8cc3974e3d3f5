"""`tritonctl deploy` through Typer's CliRunner, and the option checks behind it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from server.errors import ConfigError
from tritonctl.cli.main import app
from tritonctl.deploy import DeploySpec, parse_repository_uri

Manifest = dict[str, Any]
runner = CliRunner()


def _documents(text: str) -> list[Manifest]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def test_k8s_prints_one_stream_for_kubectl_apply(validate_any: Callable[[Manifest], None]) -> None:
    result = runner.invoke(app, ["deploy", "k8s", "pvc://models/repo", "--name", "resnet", "--gpus", "1"])
    assert result.exit_code == 0, result.output
    documents = _documents(result.stdout)
    assert [doc["kind"] for doc in documents] == ["Deployment", "Service"]
    for document in documents:
        validate_any(document)
    assert documents[0]["spec"]["template"]["spec"]["containers"][0]["image"].startswith("tritonctl-pytorch:")


def test_k8s_autoscaled_writes_one_file_per_object(
    tmp_path: Path, validate_any: Callable[[Manifest], None]
) -> None:
    args = ["deploy", "k8s", "s3://bucket/repo", "--min", "1", "--max", "5", "-n", "ml", "-o", str(tmp_path)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    files = sorted(path.name for path in tmp_path.iterdir())
    assert files == [
        "01-deployment.yaml",
        "02-service.yaml",
        "03-horizontalpodautoscaler.yaml",
        "04-configmap.yaml",
    ]
    for path in tmp_path.iterdir():
        (document,) = _documents(path.read_text())
        assert document["metadata"]["namespace"] == "ml"
        validate_any(document)


def test_kserve_with_all_options(tmp_path: Path, validate_any: Callable[[Manifest], None]) -> None:
    args = [
        "deploy", "kserve", "gs://bucket/repo", "--name", "resnet", "--min", "1", "--max", "4", "--gpus", "2",
        "--image", "registry.example.com/tritonctl-pytorch:1", "--runtime-name", "tritonctl-gpu",
        "--cluster-runtime", "--server-arg=--log-verbose=1", "--queue-target-us", "200", "-o", str(tmp_path),
    ]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    runtime = _documents((tmp_path / "01-clusterservingruntime.yaml").read_text())[0]
    isvc = _documents((tmp_path / "02-inferenceservice.yaml").read_text())[0]
    validate_any(runtime)
    validate_any(isvc)
    assert runtime["spec"]["containers"][0]["image"] == "registry.example.com/tritonctl-pytorch:1"
    assert "--log-verbose=1" in runtime["spec"]["containers"][0]["args"]
    assert isvc["spec"]["predictor"]["model"]["runtime"] == "tritonctl-gpu"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["k8s", "./model_repo"], "not a repository URI"),
        (["kserve", "pvc://Bad_Claim"], "pvc://CLAIM"),
        (["k8s", "pvc://models", "--min", "2"], "both --min and --max"),
        (["k8s", "pvc://models", "--min", "3", "--max", "2"], "must not be below"),
        (["kserve", "pvc://models", "--name", "Not_A_Name"], "not a valid Kubernetes name"),
        (["k8s", "pvc://models", "--memory", "lots"], "--memory"),
        (["k8s", "pvc://models", "--server-arg=--http-port=1"], "--http-port"),
        (["kserve", "pvc://models", "--server-arg=--bogus"], "--bogus"),
    ],
)
def test_bad_input_exits_2_with_the_reason(args: list[str], message: str) -> None:
    result = runner.invoke(app, ["deploy", *args])
    assert result.exit_code == 2
    assert message in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("uri", "claim", "sub_path"),
    [
        ("pvc://models", "models", ""),
        ("pvc://models/team/repo/", "models", "team/repo"),
        ("s3://bucket/repo", None, ""),
        ("hf://org/model", None, ""),
        ("https://example.com/repo.tar.gz", None, ""),
    ],
)
def test_repository_uris(uri: str, claim: str | None, sub_path: str) -> None:
    source = parse_repository_uri(uri)
    assert (source.uri, source.claim, source.sub_path, source.is_volume) == (
        uri,
        claim,
        sub_path,
        claim is not None,
    )


@pytest.mark.parametrize(
    "uri", ["/models", "model_repo", "pvc://", "pvc://models/../etc", "ftp://host/x", "s3://"]
)
def test_unreachable_repository_uris_are_refused(uri: str) -> None:
    with pytest.raises(ConfigError):
        parse_repository_uri(uri)


def test_default_images_follow_gpus() -> None:
    assert DeploySpec.create("a", "pvc://m").image.startswith("tritonctl:")
    assert DeploySpec.create("a", "pvc://m", gpus=1).image.startswith("tritonctl-pytorch:")
    assert DeploySpec.create("a", "pvc://m", gpus=1, image="mine:1").image == "mine:1"
