"""Probes, ports and args of the generated manifests round-trip through the server's own parser.

The container args go through the image's real `tritonserver` script (docker/tritonserver) and then
`server.options.parse_tritonserver_args`, exactly what a pod runs; every port, probe, annotation and
mount in the manifests must agree with the options the server ends up with.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import yaml

from server.options import ServerOptions, parse_tritonserver_args
from tritonctl.deploy import DeploySpec, kserve_manifests, kubernetes_manifests
from tritonctl.deploy.autoscaling import QUEUE_DURATION_METRIC, REQUEST_SUCCESS_METRIC

Manifest = dict[str, Any]
RunEntrypoint = Callable[[list[str]], list[str]]
EXTRA_ARGS = ["--log-verbose=1", "--backend-config=python,shm-default-size=2147483648"]


def _by_kind(manifests: list[Manifest]) -> dict[str, Manifest]:
    return {manifest["kind"]: manifest for manifest in manifests}


def _server_options(container: Manifest, run_entrypoint: RunEntrypoint) -> ServerOptions:
    args = container["args"]
    assert args[0] == "tritonserver", "the container must run the image's tritonserver entry point"
    argv = run_entrypoint(args[1:])
    assert argv[:2] == ["-m", "server"]
    return parse_tritonserver_args(argv[2:])


def _autoscaled_spec(**options: Any) -> DeploySpec:
    return DeploySpec.create(
        "resnet",
        "s3://bucket/models",
        namespace="ml",
        min_replicas=2,
        max_replicas=6,
        gpus=1,
        server_args=EXTRA_ARGS,
        **options,
    )


def test_kubernetes_ports_probes_and_mounts_match_the_server(run_entrypoint: RunEntrypoint) -> None:
    kinds = _by_kind(kubernetes_manifests(_autoscaled_spec()))
    pod = kinds["Deployment"]["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    options = _server_options(container, run_entrypoint)

    # Reachable from the kubelet and the Service: every listener on all interfaces.
    assert (options.http_host, options.grpc_host, options.metrics_host) == ("0.0.0.0",) * 3
    # Triton's ports, as a plain Deployment is expected to expose them.
    defaults = ServerOptions()
    assert (options.http_port, options.grpc_port, options.metrics_port) == (
        defaults.http_port,
        defaults.grpc_port,
        defaults.metrics_port,
    )
    named_ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert named_ports == {
        "http": options.http_port,
        "grpc": options.grpc_port,
        "metrics": options.metrics_port,
    }

    for probe, path in (
        ("startupProbe", "/v2/health/ready"),
        ("readinessProbe", "/v2/health/ready"),
        ("livenessProbe", "/v2/health/live"),
    ):
        assert container[probe]["httpGet"] == {"path": path, "port": options.http_port}

    assert pod["metadata"]["annotations"]["prometheus.io/port"] == str(options.metrics_port)
    mounts = {mount["name"]: mount["mountPath"] for mount in container["volumeMounts"]}
    assert [str(path) for path in options.model_repositories] == [mounts["model-repository"]]
    assert mounts["dshm"] == "/dev/shm"
    (initializer,) = pod["spec"]["initContainers"]
    assert initializer["args"] == ["s3://bucket/models", mounts["model-repository"]]

    # The extra flags reach the server unchanged.
    assert options.log_verbose == 1
    assert options.backend_config == ["python,shm-default-size=2147483648"]


def test_kubernetes_service_and_autoscaler_point_at_the_pods() -> None:
    kinds = _by_kind(kubernetes_manifests(_autoscaled_spec()))
    deployment, service = kinds["Deployment"], kinds["Service"]
    template_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= template_labels.items()
    assert service["spec"]["selector"].items() <= template_labels.items()
    container_ports = {
        port["name"]: port["containerPort"]
        for port in deployment["spec"]["template"]["spec"]["containers"][0]["ports"]
    }
    assert {port["port"]: container_ports[port["targetPort"]] for port in service["spec"]["ports"]} == {
        8000: 8000,
        8001: 8001,
        8002: 8002,
    }

    hpa = kinds["HorizontalPodAutoscaler"]
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": deployment["apiVersion"],
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    assert "replicas" not in deployment["spec"], "the HPA owns the replica count"
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 6)

    (rule,) = yaml.safe_load(kinds["ConfigMap"]["data"]["config.yaml"])["rules"]
    (metric,) = hpa["spec"]["metrics"]
    assert metric["pods"]["metric"]["name"] == rule["name"]["as"]
    assert rule["seriesQuery"].startswith(QUEUE_DURATION_METRIC + "{")
    assert QUEUE_DURATION_METRIC in rule["metricsQuery"]
    assert REQUEST_SUCCESS_METRIC in rule["metricsQuery"]
    assert "<<.LabelMatchers>>" in rule["metricsQuery"]
    assert "<<.GroupBy>>" in rule["metricsQuery"]


def test_fixed_replicas_have_no_autoscaler() -> None:
    spec = DeploySpec.create("resnet", "pvc://models", replicas=3)
    kinds = _by_kind(kubernetes_manifests(spec))
    assert set(kinds) == {"Deployment", "Service"}
    assert kinds["Deployment"]["spec"]["replicas"] == 3
    volume = kinds["Deployment"]["spec"]["template"]["spec"]["volumes"][0]
    assert volume["persistentVolumeClaim"] == {"claimName": "models", "readOnly": True}
    assert "initContainers" not in kinds["Deployment"]["spec"]["template"]["spec"]


def test_gpus_are_requested_and_tolerated() -> None:
    kinds = _by_kind(kubernetes_manifests(_autoscaled_spec()))
    pod_spec = kinds["Deployment"]["spec"]["template"]["spec"]
    assert pod_spec["containers"][0]["resources"]["limits"] == {"nvidia.com/gpu": "1"}
    assert pod_spec["tolerations"][0]["key"] == "nvidia.com/gpu"
    cpu_only = _by_kind(kubernetes_manifests(DeploySpec.create("resnet", "pvc://models")))
    cpu_pod = cpu_only["Deployment"]["spec"]["template"]["spec"]
    assert "limits" not in cpu_pod["containers"][0]["resources"]
    assert "tolerations" not in cpu_pod


def test_kserve_runtime_matches_the_server(run_entrypoint: RunEntrypoint) -> None:
    runtime, isvc = kserve_manifests(_autoscaled_spec(), runtime_name="tritonctl-gpu")
    (container,) = runtime["spec"]["containers"]
    assert container["name"] == "kserve-container"
    options = _server_options(container, run_entrypoint)

    # KServe's contract for v2 runtimes: HTTP on 8080, gRPC on 9000, the model under /mnt/models.
    assert (options.http_port, options.grpc_port) == (8080, 9000)
    assert [str(path) for path in options.model_repositories] == ["/mnt/models"]
    assert options.http_host == "0.0.0.0"
    assert options.allow_http and options.allow_grpc and options.allow_metrics
    assert container["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": options.http_port}
    assert container["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": options.http_port}
    assert runtime["spec"]["annotations"]["prometheus.kserve.io/port"] == str(options.metrics_port)
    assert runtime["spec"]["protocolVersions"] == ["v2", "grpc-v2"]
    formats = {fmt["name"] for fmt in runtime["spec"]["supportedModelFormats"]}
    assert formats == {"triton", "onnx", "pytorch", "tensorrt"}
    assert options.log_verbose == 1

    model = isvc["spec"]["predictor"]["model"]
    assert model["runtime"] == runtime["metadata"]["name"] == "tritonctl-gpu"
    assert model["storageUri"] == "s3://bucket/models"
    assert model["protocolVersion"] == "v2"
    assert model["modelFormat"] in [
        {"name": fmt["name"], "version": fmt["version"]} for fmt in runtime["spec"]["supportedModelFormats"]
    ]
    assert model["resources"]["limits"] == {"nvidia.com/gpu": "1"}


def test_kserve_autoscaling_queries_the_queue_time_of_its_own_pods() -> None:
    _, isvc = kserve_manifests(_autoscaled_spec(queue_time_target_us=750))
    predictor = isvc["spec"]["predictor"]
    assert (predictor["minReplicas"], predictor["maxReplicas"]) == (2, 6)
    assert isvc["metadata"]["annotations"]["serving.kserve.io/autoscalerClass"] == "keda"
    (metric,) = predictor["autoScaling"]["metrics"]
    query = metric["external"]["metric"]["query"]
    assert QUEUE_DURATION_METRIC in query and REQUEST_SUCCESS_METRIC in query
    assert 'namespace="ml"' in query and 'pod=~"resnet-predictor-.*"' in query
    assert metric["external"]["target"] == {"type": "Value", "value": "750"}


def test_kserve_fixed_replicas_and_cluster_runtime() -> None:
    spec = DeploySpec.create("resnet", "pvc://models", namespace="ml", replicas=2)
    runtime, isvc = kserve_manifests(spec, cluster_runtime=True)
    assert runtime["kind"] == "ClusterServingRuntime"
    assert "namespace" not in runtime["metadata"], "cluster-scoped"
    predictor = isvc["spec"]["predictor"]
    assert (predictor["minReplicas"], predictor["maxReplicas"]) == (2, 2)
    assert "autoScaling" not in predictor
    assert "serving.kserve.io/autoscalerClass" not in isvc["metadata"]["annotations"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--http-port=9999"], "--http-port"),
        (["--grpc-port=1"], "--grpc-port"),
        (["--model-repository=/elsewhere"], "--model-repository"),
        (["--no-such-flag"], "no-such-flag"),
        (["--grpc-use-ssl=true"], "TLS"),
        (["--host=127.0.0.1"], "pod's IP"),
        (["--metrics-address=127.0.0.1"], "--metrics-address"),
        (["--allow-grpc=false"], "--allow-grpc"),
    ],
)
def test_server_args_that_would_break_the_pod_are_refused(extra: list[str], message: str) -> None:
    from server.errors import ConfigError

    spec = DeploySpec.create("resnet", "pvc://models", server_args=extra)
    with pytest.raises(ConfigError, match=message):
        kubernetes_manifests(spec)
    with pytest.raises(ConfigError, match=message):
        kserve_manifests(spec)
