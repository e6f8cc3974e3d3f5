"""Server side of rollouts: `version_weights` routing and loads that keep serving versions running."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from rollout_helpers import (
    MODEL,
    Traffic,
    success_by_version,
    version_states,
    worker_pids,
    write_ranker,
)
from tritonclient.utils import InferenceServerException

from tests.support.server import start_server

# Threads send with tritonclient.http, whose client closes its gevent pool in __del__: run by the
# cyclic GC in another thread, gevent raises there (an unraisable warning from the client library,
# see tests/integration/core/test_shutdown.py).
pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]


def routed_config(client: httpclient.InferenceServerClient, versions: list[int], weights: str | None) -> str:
    config: dict[str, Any] = client.get_model_config(MODEL)
    config["version_policy"] = {"specific": {"versions": versions}}
    parameters = dict(config.get("parameters", {}))
    parameters.pop("version_weights", None)
    if weights is not None:
        parameters["version_weights"] = {"string_value": weights}
    config["parameters"] = parameters
    return json.dumps(config)


def infer(client: httpclient.InferenceServerClient, version: str = "") -> str:
    tensor = httpclient.InferInput("INPUT0", [1, 4], "FP32")
    tensor.set_data_from_numpy(np.ones((1, 4), dtype=np.float32))
    return str(client.infer(MODEL, [tensor], model_version=version).get_response()["model_version"])


BAD_WEIGHTS = {
    "1:50,3:50": "version_weights names version(s) 3, which the version_policy does not load "
    "(it loads: 1, 2)",
    "1:0,2:0": "version_weights must give at least one version a weight above 0",
    "1:ninety": "version_weights item '1:ninety' must be VERSION:WEIGHT",
    "1:-5": "version_weights item '1:-5' must be VERSION:WEIGHT",
}


def test_weights_split_unversioned_requests_and_routing_changes_keep_instances(tmp_path: Path) -> None:
    write_ranker(tmp_path, loaded=[1])
    with start_server(tmp_path, "--model-control-mode=explicit", f"--load-model={MODEL}") as server:
        client = httpclient.InferenceServerClient(server.http_url)
        v1_workers = worker_pids(server)
        assert len(v1_workers) == 1

        client.load_model(MODEL, config=routed_config(client, [1, 2], "1:3,2:1"))
        assert worker_pids(server) > v1_workers  # v2 started beside v1; v1's instance kept
        weights = client.get_model_config(MODEL)["parameters"]["version_weights"]["string_value"]
        assert weights == "1:3,2:1"
        before = success_by_version(server)
        answered = [infer(client) for _ in range(40)]
        # Smooth weighted round-robin: exact shares, interleaved rather than bunched.
        assert answered.count("1") == 30 and answered.count("2") == 10
        assert "2,2" not in ",".join(answered)
        after = success_by_version(server)
        assert after["1"] - before.get("1", 0) == 30 and after["2"] - before.get("2", 0) == 10
        assert {infer(client, "2") for _ in range(5)} == {"2"}  # a named version always answers

        # Over gRPC as well, and a weight change moves everything to v2 without a restart.
        grpc = grpcclient.InferenceServerClient(server.grpc_url)
        workers = worker_pids(server)
        grpc.load_model(MODEL, config=routed_config(client, [1, 2], "1:0,2:100"))
        assert worker_pids(server) == workers
        assert {infer(client) for _ in range(10)} == {"2"}

        # Bad weights are refused with the validator's words and change nothing.
        for bad, message in BAD_WEIGHTS.items():
            with pytest.raises(InferenceServerException, match=re.escape(message)) as info:
                client.load_model(MODEL, config=routed_config(client, [1, 2], bad))
            assert "E345-bad-version-weights" in str(info.value)
        assert {infer(client) for _ in range(4)} == {"2"}
        assert worker_pids(server) == workers

        # Promote: v1 leaves the policy, drains and stops; v2's instance is the same process.
        grpc.load_model(MODEL, config=routed_config(client, [2], None))
        assert version_states(server) == {"1": "UNAVAILABLE", "2": "READY"}
        assert len(worker_pids(server) & workers) == 1
        assert "version_weights" not in client.get_model_config(MODEL).get("parameters", {})

        # Policy and weight changes under live traffic (HTTP and gRPC threads) fail no request.
        with Traffic(server) as traffic:
            phases = (([1, 2], "2:100", ("2",)), ([1, 2], "1:50,2:50", ("1", "2")), ([1], None, ("1",)))
            for versions, weights, serving in phases:
                grpc.load_model(MODEL, config=routed_config(client, versions, weights))
                traffic.wait_for_answers(*serving)  # each routing carries traffic before the next
        assert traffic.failures == []
        assert traffic.answered["1"] > 0 and traffic.answered["2"] > 0
        assert version_states(server) == {"1": "READY", "2": "UNAVAILABLE"}

        # A new set that does not fully come up (4 fails to start) removes nothing: 1 keeps serving.
        with pytest.raises(InferenceServerException, match="version 4 cannot start on purpose"):
            grpc.load_model(MODEL, config=routed_config(client, [2, 4], None))
        assert version_states(server) == {"1": "READY", "2": "READY", "4": "UNAVAILABLE"}
        assert {infer(client, "1") for _ in range(3)} == {"1"}
        grpc.close()
        client.close()
