"""Scale on the average queue time per request, as Triton deployments do.

The server exports Triton's counters `nv_inference_queue_duration_us` (total microseconds requests
waited) and `nv_inference_request_success`; their increases over a window divide into the average
queue time of the requests in it. Kubernetes reads that through prometheus-adapter (the rule below,
exposed as the custom pods metric `avg_time_queue_us`); KServe reads it through KEDA's Prometheus
scaler with the same query.
"""

from __future__ import annotations

from typing import Any

import yaml

from tritonctl.deploy.pod import Manifest, labels, metadata
from tritonctl.deploy.spec import DeploySpec

QUEUE_DURATION_METRIC = "nv_inference_queue_duration_us"
REQUEST_SUCCESS_METRIC = "nv_inference_request_success"
QUEUE_TIME_METRIC = "avg_time_queue_us"  # the custom metric the HPA asks the adapter for
# Long enough to hold several scrapes at the usual 15-30 s interval.
RATE_WINDOW = "1m"
DEFAULT_PROMETHEUS_URL = "http://prometheus-operated.monitoring.svc:9090"


def queue_time_query(label_matchers: str, group_by: str | None = None) -> str:
    """PromQL for average queue microseconds per successful request; `1 +` keeps an idle pod at 0."""
    by = f" by ({group_by})" if group_by else ""

    def increase(metric: str) -> str:
        return f"sum(increase({metric}{{{label_matchers}}}[{RATE_WINDOW}])){by}"

    return f"{increase(QUEUE_DURATION_METRIC)} / (1 + {increase(REQUEST_SUCCESS_METRIC)})"


def adapter_rule() -> dict[str, Any]:
    """One prometheus-adapter `rules` entry: per pod, the custom metric `avg_time_queue_us`."""
    return {
        "seriesQuery": f'{QUEUE_DURATION_METRIC}{{namespace!="",pod!=""}}',
        "resources": {"overrides": {"namespace": {"resource": "namespace"}, "pod": {"resource": "pod"}}},
        "name": {"matches": f"^{QUEUE_DURATION_METRIC}$", "as": QUEUE_TIME_METRIC},
        "metricsQuery": queue_time_query("<<.LabelMatchers>>", "<<.GroupBy>>"),
    }


def adapter_config_map(spec: DeploySpec) -> Manifest:
    """The rule as a ConfigMap in prometheus-adapter's format (its `config.yaml` key).

    Clusters run one adapter with one config: merge this rule into it (Helm chart: `rules.custom`) or
    point an adapter at this ConfigMap.
    """
    config = yaml.safe_dump({"rules": [adapter_rule()]}, sort_keys=False, width=1000)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(f"{spec.name}-prometheus-adapter", spec.namespace, labels=labels(spec)),
        "data": {"config.yaml": config},
    }


def horizontal_pod_autoscaler(spec: DeploySpec, deployment_name: str) -> Manifest:
    assert spec.min_replicas is not None and spec.max_replicas is not None
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": metadata(spec.name, spec.namespace, labels=labels(spec)),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment_name},
            "minReplicas": spec.min_replicas,
            "maxReplicas": spec.max_replicas,
            "metrics": [
                {
                    "type": "Pods",
                    "pods": {
                        "metric": {"name": QUEUE_TIME_METRIC},
                        "target": {"type": "AverageValue", "averageValue": str(spec.queue_time_target_us)},
                    },
                }
            ],
        },
    }


def keda_queue_time_metric(spec: DeploySpec, prometheus_url: str) -> Manifest:
    """An InferenceService `autoScaling.metrics` entry: KEDA queries Prometheus for the same average."""
    # KServe names the predictor pods "<isvc>-predictor-..."; Prometheus' pod label carries that name.
    matchers = f'pod=~"{spec.name}-predictor-.*"'
    if spec.namespace:
        matchers = f'namespace="{spec.namespace}",{matchers}'
    return {
        "type": "External",
        "external": {
            "metric": {
                "backend": "prometheus",
                "serverAddress": prometheus_url,
                "query": queue_time_query(matchers),
            },
            # The query is already an average over all pods, so it is compared as a plain value.
            "target": {"type": "Value", "value": str(spec.queue_time_target_us)},
        },
    }
