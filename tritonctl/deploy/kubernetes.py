"""Plain Kubernetes: Deployment, Service (8000/8001/8002) and, when autoscaled, an HPA on queue time.

The repository reaches the pod either as a PersistentVolumeClaim mounted read-only at /models, or
through an init container (KServe's storage initializer) that downloads it into an emptyDir first.
"""

from __future__ import annotations

from tritonctl.deploy import pod
from tritonctl.deploy.autoscaling import adapter_config_map, horizontal_pod_autoscaler
from tritonctl.deploy.pod import KUBERNETES_PORTS, Manifest
from tritonctl.deploy.spec import DeploySpec

MODEL_REPOSITORY = "/models"  # where the images expect it (`docker run -v ...:/models`)
REPOSITORY_VOLUME = "model-repository"
STORAGE_INITIALIZER_IMAGE = "kserve/storage-initializer:v0.16.0"


def kubernetes_manifests(
    spec: DeploySpec, *, storage_initializer_image: str = STORAGE_INITIALIZER_IMAGE
) -> list[Manifest]:
    """Deployment and Service; with --min/--max also the HPA and the prometheus-adapter rule it needs."""
    args = pod.server_args(MODEL_REPOSITORY, KUBERNETES_PORTS, spec.server_args)
    pod.check_server_args(args, MODEL_REPOSITORY, KUBERNETES_PORTS)
    manifests = [deployment(spec, args, storage_initializer_image), service(spec)]
    if spec.autoscaled:
        manifests.append(horizontal_pod_autoscaler(spec, deployment_name=spec.name))
        manifests.append(adapter_config_map(spec))
    return manifests


def deployment(spec: DeploySpec, args: list[str], storage_initializer_image: str) -> Manifest:
    ports = KUBERNETES_PORTS
    container: Manifest = {
        "name": "tritonserver",
        "image": spec.image,
        "imagePullPolicy": "IfNotPresent",
        "args": args,
        "ports": [
            {"name": "http", "containerPort": ports.http, "protocol": "TCP"},
            {"name": "grpc", "containerPort": ports.grpc, "protocol": "TCP"},
            {"name": "metrics", "containerPort": ports.metrics, "protocol": "TCP"},
        ],
        "startupProbe": pod.startup_probe(ports.http),
        "livenessProbe": pod.liveness_probe(ports.http),
        "readinessProbe": pod.readiness_probe(ports.http),
        "resources": pod.resources(spec),
        "securityContext": pod.security_context(),
        "volumeMounts": [_repository_mount(spec), pod.shm_mount()],
    }
    pod_spec: Manifest = {
        "securityContext": {"fsGroup": pod.SERVER_UID},
        "terminationGracePeriodSeconds": pod.TERMINATION_GRACE_S,
    }
    if not spec.repository.is_volume:
        pod_spec["initContainers"] = [_storage_initializer(spec, storage_initializer_image)]
    pod_spec["containers"] = [container]
    pod_spec["volumes"] = [_repository_volume(spec), pod.shm_volume(spec)]
    tolerations = pod.gpu_tolerations(spec)
    if tolerations:
        pod_spec["tolerations"] = tolerations
    deployment_spec: Manifest = {
        "selector": {"matchLabels": pod.selector_labels(spec)},
        "template": {
            "metadata": {"labels": pod.labels(spec), "annotations": pod.prometheus_annotations(ports)},
            "spec": pod_spec,
        },
    }
    if not spec.autoscaled:
        # With an HPA the replica count is the HPA's; a fixed one here would fight it on every apply.
        deployment_spec = {"replicas": spec.replicas, **deployment_spec}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": pod.metadata(spec.name, spec.namespace, labels=pod.labels(spec)),
        "spec": deployment_spec,
    }


def service(spec: DeploySpec) -> Manifest:
    ports = KUBERNETES_PORTS
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": pod.metadata(spec.name, spec.namespace, labels=pod.labels(spec)),
        "spec": {
            "type": "ClusterIP",
            "selector": pod.selector_labels(spec),
            "ports": [
                {"name": "http", "port": ports.http, "targetPort": "http", "appProtocol": "http"},
                # h2c: gRPC without TLS, so meshes and ingresses speak HTTP/2 to it.
                {
                    "name": "grpc",
                    "port": ports.grpc,
                    "targetPort": "grpc",
                    "appProtocol": "kubernetes.io/h2c",
                },
                {"name": "metrics", "port": ports.metrics, "targetPort": "metrics", "appProtocol": "http"},
            ],
        },
    }


def _repository_volume(spec: DeploySpec) -> Manifest:
    if spec.repository.claim is not None:
        return {
            "name": REPOSITORY_VOLUME,
            "persistentVolumeClaim": {"claimName": spec.repository.claim, "readOnly": True},
        }
    return {"name": REPOSITORY_VOLUME, "emptyDir": {}}


def _repository_mount(spec: DeploySpec) -> Manifest:
    mount: Manifest = {"name": REPOSITORY_VOLUME, "mountPath": MODEL_REPOSITORY, "readOnly": True}
    if spec.repository.sub_path:
        mount["subPath"] = spec.repository.sub_path
    return mount


def _storage_initializer(spec: DeploySpec, image: str) -> Manifest:
    # The same downloader KServe runs before its predictors: args are SOURCE_URI DEST_DIR. Credentials
    # come the KServe way (a service account with the storage secrets), not through this manifest.
    return {
        "name": "storage-initializer",
        "image": image,
        "args": [spec.repository.uri, MODEL_REPOSITORY],
        "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}},
        # Its image brings its own non-root user (and home for download caches); the emptyDir it fills
        # is world-writable, and what it writes stays readable for the server's user.
        "securityContext": pod.security_context(run_as=None),
        "volumeMounts": [{"name": REPOSITORY_VOLUME, "mountPath": MODEL_REPOSITORY}],
    }
