"""Restricted API groups and gRPC over TLS on the real server, driven by unchanged tritonclient."""

from __future__ import annotations

from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.integration.reliability.certificates import make_certificates
from tests.integration.reliability.helpers import identity_inputs
from tests.support.models import write_python_model
from tests.support.server import start_server

pytestmark = pytest.mark.integration

ADMIN = {"admin-key": "s3cret"}
GRPC_ADMIN = {"triton-grpc-protocol-admin-key": "s3cret"}
HTTP_MESSAGE = "This API is restricted, expecting header 'admin-key'"
GRPC_MESSAGE = "This protocol is restricted, expecting header 'triton-grpc-protocol-admin-key'"


def grpc_inputs() -> list[grpcclient.InferInput]:
    tensor = grpcclient.InferInput("INPUT0", [1, 4], "FP32")
    tensor.set_data_from_numpy(np.ones((1, 4), np.float32))
    return [tensor]


@pytest.mark.parametrize("stack", ["grpcio", "h2"])
def test_restricted_groups_need_their_header(tmp_path: Path, stack: str) -> None:
    write_python_model(tmp_path, "identity", "identity", dims=[4])
    groups = "model-repository,statistics,model-config:admin-key=s3cret"
    args = (
        "--model-control-mode=explicit",
        "--load-model=identity",
        f"--http-restricted-api={groups}",
        "--http-restricted-api=inference:infer-key=abc",
        f"--grpc-restricted-protocol={groups}",
        f"--grpc-stack={stack}",
    )
    with start_server(tmp_path, *args, entry="tritonctl") as server:
        base = f"http://{server.http_url}"
        # HTTP: 403 with Triton's message without (or with a wrong) header; open groups stay open.
        for method, path in (
            ("POST", "/v2/repository/index"),
            ("POST", "/v2/repository/models/identity/unload"),
            ("GET", "/v2/models/identity/stats"),
            ("GET", "/v2/models/identity/config"),
        ):
            for headers in ({}, {"admin-key": "wrong"}):
                answer = httpx.request(method, base + path, headers=headers, timeout=30)
                assert answer.status_code == 403, (path, answer.text)
                assert answer.json() == {"error": HTTP_MESSAGE}
        assert httpx.get(base + "/v2/health/ready").status_code == 200
        assert httpx.get(base + "/v2/models/identity").status_code == 200
        http = httpclient.InferenceServerClient(server.http_url)
        with pytest.raises(InferenceServerException, match="expecting header 'infer-key'"):
            http.infer("identity", identity_inputs())
        http.infer("identity", identity_inputs(), headers={"infer-key": "abc"})
        assert http.get_model_repository_index(headers=ADMIN)[0]["name"] == "identity"
        assert http.get_inference_statistics("identity", headers=ADMIN)["model_stats"]
        with pytest.raises(InferenceServerException, match=HTTP_MESSAGE):
            http.get_model_repository_index()

        # gRPC: UNAVAILABLE with Triton's message; inference is not restricted there.
        client = grpcclient.InferenceServerClient(server.grpc_url)
        for call in (
            client.get_model_repository_index,
            lambda: client.get_inference_statistics("identity"),
            lambda: client.get_model_config("identity"),
            lambda: client.unload_model("identity"),
            lambda: client.get_model_repository_index(headers={"triton-grpc-protocol-admin-key": "no"}),
        ):
            with pytest.raises(InferenceServerException) as failed:
                call()
            assert failed.value.status() == "StatusCode.UNAVAILABLE"
            assert failed.value.message() == GRPC_MESSAGE
        assert client.get_model_repository_index(headers=GRPC_ADMIN).models[0].name == "identity"
        assert client.get_model_config("identity", headers=GRPC_ADMIN).config.name == "identity"
        assert client.is_server_ready() and client.is_model_ready("identity")
        assert client.infer("identity", grpc_inputs()).as_numpy("OUTPUT0") is not None
        http.close()
        client.close()


def test_bad_restriction_flags_stop_the_server_with_a_message(tmp_path: Path) -> None:
    with (
        pytest.raises(RuntimeError, match="unknown restricted api 'everything'"),
        start_server(tmp_path, "--http-restricted-api=everything:k=v", timeout=30),
    ):
        pass


def test_grpc_over_tls_and_mutual_tls(tmp_path: Path) -> None:
    write_python_model(tmp_path / "repo", "identity", "identity", dims=[4])
    ca, server_pem, client_pem = make_certificates(tmp_path)
    tls = (
        "--grpc-use-ssl=true",
        f"--grpc-server-cert={server_pem.cert}",
        f"--grpc-server-key={server_pem.key}",
    )
    with start_server(tmp_path / "repo", *tls) as server:
        secure = grpcclient.InferenceServerClient(server.grpc_url, ssl=True, root_certificates=str(ca.cert))
        assert secure.is_server_ready()
        assert secure.infer("identity", grpc_inputs()).as_numpy("OUTPUT0").tolist() == [[1.0] * 4]
        plain = grpcclient.InferenceServerClient(server.grpc_url)
        with pytest.raises(InferenceServerException):
            plain.is_server_live(client_timeout=10)
        assert server.get("/v2/health/ready")[0] == 200  # HTTP is unaffected

    mutual = (*tls, "--grpc-use-ssl-mutual=true", f"--grpc-root-cert={ca.cert}")
    with start_server(tmp_path / "repo", *mutual) as server:
        with_cert = grpcclient.InferenceServerClient(
            server.grpc_url,
            ssl=True,
            root_certificates=str(ca.cert),
            private_key=str(client_pem.key),
            certificate_chain=str(client_pem.cert),
        )
        assert with_cert.infer("identity", grpc_inputs()).as_numpy("OUTPUT0") is not None
        # Without a client certificate the handshake fails: no RPC reaches the server.
        channel = grpc.secure_channel(server.grpc_url, grpc.ssl_channel_credentials(ca.cert.read_bytes()))
        live = channel.unary_unary("/inference.GRPCInferenceService/ServerLive")
        with pytest.raises(grpc.RpcError) as failed:
            live(b"", timeout=10)
        assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
        channel.close()


def test_tls_without_its_files_is_refused(tmp_path: Path) -> None:
    with (
        pytest.raises(RuntimeError, match="--grpc-use-ssl needs --grpc-server-cert"),
        start_server(tmp_path, "--grpc-use-ssl=true", timeout=30),
    ):
        pass
    (tmp_path / "not.pem").write_text("hello")
    bad = (
        "--grpc-use-ssl=true",
        f"--grpc-server-cert={tmp_path / 'not.pem'}",
        f"--grpc-server-key={tmp_path / 'x'}",
    )
    with (
        pytest.raises(RuntimeError, match=r"--grpc-server-cert: .* is not a PEM file"),
        start_server(tmp_path, *bad, timeout=30),
    ):
        pass
