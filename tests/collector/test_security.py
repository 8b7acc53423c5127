"""Security: loopback by default, bearer tokens per role and TLS on every endpoint, content redaction,
nothing from the network unpickled or evaluated."""

from __future__ import annotations

import datetime
import ipaddress
import re
import ssl
import time
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from otel_lightning.channels import open_channel
from otel_lightning.stream_client import TransitionStreamClient
from otel_lightning.task_client import TaskPoolClient
from otel_lightning_collector import CollectorConfig, CollectorServer
from tests.collector.test_ingest_robustness import EXPORT
from tests.support import SpanFactory, export_request, rollouts, wait_for_rollouts

REPO = Path(__file__).resolve().parents[2]
TOKENS = {"exporter": "exp-secret", "worker": "wrk-secret", "trainer": "trn-secret"}


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost: (certificate, key) PEM files."""
    directory = tmp_path_factory.mktemp("tls")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_file, key_file


def request_bytes(rollout_id: str) -> bytes:
    spans = SpanFactory(rollout_id=rollout_id)
    return export_request(spans.llm("q", "a"), spans.reward(1.0), spans.root()).SerializeToString()


def test_listening_beyond_loopback_must_be_asked_for(tmp_path):
    with pytest.raises(ValueError, match="--allow-remote"):
        CollectorServer(CollectorConfig(listen="0.0.0.0:0", store_path=tmp_path / "a.db"))
    with pytest.raises(ValueError, match="--allow-remote"):
        CollectorServer(CollectorConfig(listen="127.0.0.1:0", http_listen="0.0.0.0:0", store_path=tmp_path / "b.db"))
    with CollectorServer(
        CollectorConfig(listen="0.0.0.0:0", store_path=tmp_path / "c.db", allow_remote=True)
    ) as server:
        assert server.port > 0


def test_grpc_tokens_per_role(tmp_path):
    config = CollectorConfig(listen="127.0.0.1:0", store_path=tmp_path / "c.db", tokens=TOKENS)
    with CollectorServer(config) as server:

        def export(token: str | None) -> grpc.StatusCode:
            try:
                open_channel(server.address, token=token).unary_unary(EXPORT)(request_bytes(f"r-{token}"), timeout=10)
            except grpc.RpcError as error:
                return error.code()
            return grpc.StatusCode.OK

        assert export(None) == grpc.StatusCode.UNAUTHENTICATED
        assert export("wrong") == grpc.StatusCode.UNAUTHENTICATED
        assert export(TOKENS["worker"]) == grpc.StatusCode.PERMISSION_DENIED
        assert export(TOKENS["exporter"]) == grpc.StatusCode.OK
        # Workers claim, trainers submit and read the stream; not the other way round.
        with pytest.raises(grpc.RpcError) as caught:
            TaskPoolClient(server.address, channel=open_channel(server.address, token=TOKENS["worker"])).submit(
                [("t", {})]
            )
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
        TaskPoolClient(server.address, channel=open_channel(server.address, token=TOKENS["trainer"])).submit(
            [("t", {})]
        )
        lease = TaskPoolClient(server.address, channel=open_channel(server.address, token=TOKENS["worker"])).claim("w")
        assert lease is not None and lease.task_id == "t"
        with pytest.raises(grpc.RpcError) as caught:
            list(TransitionStreamClient(server.address, follow=False, channel=open_channel(server.address)))
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        done = []
        for _ in range(200):  # the assembler completes the rollout off the ingest path
            channel = open_channel(server.address, token=TOKENS["trainer"])
            done = rollouts(list(TransitionStreamClient(server.address, follow=False, channel=channel)))
            if done:
                break
            time.sleep(0.05)
        assert [r.rollout_id for r in done] == [f"r-{TOKENS['exporter']}"]


def post(url: str, body: bytes, token: str | None = None, context: ssl.SSLContext | None = None) -> int:
    headers = {"Content-Type": "application/x-protobuf", **({"Authorization": f"Bearer {token}"} if token else {})}
    try:
        with urllib.request.urlopen(
            urllib.request.Request(url, data=body, headers=headers), timeout=10, context=context
        ):
            return 200
    except urllib.error.HTTPError as error:
        return error.code


def test_tls_and_tokens_on_every_endpoint(tmp_path, certificate, monkeypatch):
    cert_file, key_file = certificate
    config = CollectorConfig(
        listen="127.0.0.1:0",
        http_listen="127.0.0.1:0",
        metrics_listen="127.0.0.1:0",
        store_path=tmp_path / "c.db",
        tokens=TOKENS,
        tls_cert_file=str(cert_file),
        tls_key_file=str(key_file),
    )
    trusted = ssl.create_default_context(cafile=str(cert_file))
    with CollectorServer(config) as server:
        # gRPC: TLS with the right CA and token works; plaintext does not get through at all.
        secure = open_channel(server.address, token=TOKENS["exporter"], tls_ca=cert_file)
        secure.unary_unary(EXPORT)(request_bytes("r-grpc-tls"), timeout=10)
        with pytest.raises(grpc.RpcError) as caught:
            open_channel(server.address, token=TOKENS["exporter"]).unary_unary(EXPORT)(request_bytes("x"), timeout=5)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        # OTLP/HTTP over https: 401 without a token, 403 with another role's, 200 with the exporter's.
        assert server.http.endpoint.startswith("https://")
        assert post(server.http.endpoint, request_bytes("r-none"), None, trusted) == 401
        assert post(server.http.endpoint, request_bytes("r-worker"), TOKENS["worker"], trusted) == 403
        assert post(server.http.endpoint, request_bytes("r-http-tls"), TOKENS["exporter"], trusted) == 200
        with pytest.raises(OSError):  # plain http to the TLS port: refused or reset
            post(server.http.endpoint.replace("https://", "http://"), request_bytes("x"), TOKENS["exporter"])
        # The metrics endpoint: TLS, and any role's token.
        metrics = f"https://127.0.0.1:{server.metrics.prometheus_port}/metrics"
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(metrics, timeout=10, context=trusted)
        assert refused.value.code == 401
        request = urllib.request.Request(metrics, headers={"Authorization": f"Bearer {TOKENS['trainer']}"})
        with urllib.request.urlopen(request, timeout=10, context=trusted) as response:
            assert b"lightning_collector_rollouts" in response.read()
        # The trainer reads the stream over TLS with its token, from the environment; status too.
        monkeypatch.setenv("LIGHTNING_TOKEN", TOKENS["trainer"])
        monkeypatch.setenv("LIGHTNING_TLS_CA", str(cert_file))
        events = wait_for_rollouts(server.address, 2)
        from otel_lightning_collector.status_cli import fetch

        assert {c.status: c.total for c in fetch(server.address).statuses}["succeeded"] == 2
    assert sorted(r.rollout_id for r in rollouts(events)) == ["r-grpc-tls", "r-http-tls"]


def test_redaction_blanks_matches_in_captured_content(monkeypatch, memory_exporter, openai_stub):
    import json

    import openai

    from otel_lightning import semconv

    monkeypatch.setenv("LIGHTNING_REDACT_PATTERN", r"[\w.+-]+@[\w-]+\.\w+|\b\d{3}-\d{2}-\d{4}\b")
    client = openai.OpenAI(api_key="x", base_url=openai_stub.base_url)
    client.chat.completions.create(
        model="stub", messages=[{"role": "user", "content": "I am ann@example.com, SSN 123-45-6789. What is 2+3?"}]
    )
    [span] = [s for s in memory_exporter.get_finished_spans() if s.attributes.get(semconv.SPAN_KIND) == "llm"]
    messages = json.loads(span.attributes[semconv.GEN_AI_INPUT_MESSAGES])  # still valid JSON
    text = json.dumps(messages)
    assert "ann@example.com" not in text and "123-45-6789" not in text
    assert text.count("[REDACTED]") == 2


def test_nothing_from_the_network_is_unpickled_or_evaluated():
    forbidden = re.compile(r"\b(pickle|marshal|shelve|dill|cloudpickle)\b|(?<![\w.])(eval|exec)\(")
    offenders = []
    for package in ("otel_lightning", "collector/src", "instrumentors"):
        for path in (REPO / package).rglob("*.py"):
            if path.name.endswith(("_pb2.py", "_pb2_grpc.py")):
                continue
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if forbidden.search(line.split("#", 1)[0]):
                    offenders.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert offenders == []


def test_the_policy_server_asks_for_its_api_key_over_tls(certificate, policy):
    import openai

    from otel_lightning.train.policy_server import PolicyServer

    cert_file, key_file = certificate
    with pytest.raises(ValueError, match="--allow-remote"):
        PolicyServer(policy, host="0.0.0.0")
    with PolicyServer(policy, api_key="model-key", tls_cert_file=str(cert_file), tls_key_file=str(key_file)) as server:
        assert server.base_url.startswith("https://")
        import httpx

        http = httpx.Client(verify=ssl.create_default_context(cafile=str(cert_file)))
        messages = [{"role": "user", "content": "What is 2+3?"}]
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(
                api_key="wrong", base_url=server.base_url, http_client=http, max_retries=0
            ).chat.completions.create(model="tiny", messages=messages, max_tokens=4)
        reply = openai.OpenAI(
            api_key="model-key", base_url=server.base_url, http_client=http, max_retries=0
        ).chat.completions.create(model="tiny", messages=messages, max_tokens=4)
        assert reply.choices[0].message is not None
