"""KServe: a ServingRuntime (or ClusterServingRuntime) that runs the server, and an InferenceService.

The server speaks KServe's v2 protocol, so KServe treats it like its own Triton runtime: HTTP on 8080,
gRPC on 9000, the repository downloaded by KServe's storage initializer into /mnt/models.
"""

from __future__ import annotations

from tritonctl.deploy import pod
from tritonctl.deploy.autoscaling import DEFAULT_PROMETHEUS_URL, keda_queue_time_metric
from tritonctl.deploy.pod import KSERVE_PORTS, Manifest
from tritonctl.deploy.spec import DeploySpec

KSERVE_API = "serving.kserve.io/v1alpha1"
INFERENCE_SERVICE_API = "serving.kserve.io/v1beta1"
MODEL_REPOSITORY = "/mnt/models"  # where KServe's storage initializer puts storageUri
# KServe merges the InferenceService's model container into the runtime container of this name.
KSERVE_CONTAINER = "kserve-container"
TRITON_FORMAT = "triton"
TRITON_FORMAT_VERSION = "2"  # Triton's repository format, as KServe's own Triton runtime labels it
# Formats (and major versions) whose models the server loads. Only "triton" is auto-selected: an
# InferenceService that asks for plain onnx or pytorch keeps the cluster's choice unless it names us.
MODEL_FORMATS = ((TRITON_FORMAT, TRITON_FORMAT_VERSION), ("onnx", "1"), ("pytorch", "1"), ("tensorrt", "10"))


def kserve_manifests(
    spec: DeploySpec,
    *,
    runtime_name: str = "tritonctl",
    cluster_runtime: bool = False,
    prometheus_url: str = DEFAULT_PROMETHEUS_URL,
) -> list[Manifest]:
    args = pod.server_args(MODEL_REPOSITORY, KSERVE_PORTS, spec.server_args)
    pod.check_server_args(args, MODEL_REPOSITORY, KSERVE_PORTS)
    return [
        serving_runtime(spec, args, runtime_name, cluster_runtime),
        inference_service(spec, runtime_name, prometheus_url),
    ]


def serving_runtime(spec: DeploySpec, args: list[str], name: str, cluster_runtime: bool) -> Manifest:
    ports = KSERVE_PORTS
    container: Manifest = {
        "name": KSERVE_CONTAINER,
        "image": spec.image,
        "args": args,
        "readinessProbe": pod.readiness_probe(ports.http),
        "livenessProbe": pod.liveness_probe(ports.http),
        "resources": {"requests": {"cpu": spec.cpu, "memory": spec.memory}},
        "securityContext": pod.security_context(),
        "volumeMounts": [pod.shm_mount()],
    }
    kind = "ClusterServingRuntime" if cluster_runtime else "ServingRuntime"
    return {
        "apiVersion": KSERVE_API,
        "kind": kind,
        # A ClusterServingRuntime is cluster-scoped: it has no namespace.
        "metadata": pod.metadata(name, None if cluster_runtime else spec.namespace, labels=pod.labels(spec)),
        "spec": {
            # KServe copies these onto the predictor pods; its Prometheus integration reads the port.
            "annotations": {
                "prometheus.kserve.io/port": str(ports.metrics),
                "prometheus.kserve.io/path": pod.METRICS_PATH,
            },
            "supportedModelFormats": [
                {"name": fmt, "version": version, "autoSelect": fmt == TRITON_FORMAT}
                for fmt, version in MODEL_FORMATS
            ],
            "protocolVersions": ["v2", "grpc-v2"],
            "multiModel": False,
            "containers": [container],
            "volumes": [pod.shm_volume(spec)],
        },
    }


def inference_service(spec: DeploySpec, runtime_name: str, prometheus_url: str) -> Manifest:
    annotations = {"serving.kserve.io/enable-prometheus-scraping": "true"}
    predictor: Manifest = {
        "model": {
            "modelFormat": {"name": TRITON_FORMAT, "version": TRITON_FORMAT_VERSION},
            "protocolVersion": "v2",
            "runtime": runtime_name,
            "storageUri": spec.repository.uri,
            "resources": pod.resources(spec),
        },
    }
    if spec.autoscaled:
        # KEDA scales on an external Prometheus query; KServe supports it in raw (standard) mode only.
        annotations["serving.kserve.io/deploymentMode"] = "RawDeployment"
        annotations["serving.kserve.io/autoscalerClass"] = "keda"
        predictor["minReplicas"] = spec.min_replicas
        predictor["maxReplicas"] = spec.max_replicas
        predictor["autoScaling"] = {"metrics": [keda_queue_time_metric(spec, prometheus_url)]}
    else:
        predictor["minReplicas"] = spec.replicas
        predictor["maxReplicas"] = spec.replicas
    tolerations = pod.gpu_tolerations(spec)
    if tolerations:
        predictor["tolerations"] = tolerations
    return {
        "apiVersion": INFERENCE_SERVICE_API,
        "kind": "InferenceService",
        "metadata": pod.metadata(spec.name, spec.namespace, labels=pod.labels(spec), annotations=annotations),
        "spec": {"predictor": predictor},
    }
