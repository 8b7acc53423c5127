"""The OTLP/HTTP receiver: `POST /v1/traces`, binary protobuf or JSON, same semantics as gRPC.

Per the OTLP/HTTP spec: the response comes in the request's encoding; bad data gets 400 with a
`google.rpc.Status`; a refused export 503 with `Retry-After` (exporters retry); gzip request
bodies are accepted. `/v1/metrics` and `/v1/logs` are acknowledged and not kept, as over gRPC.
"""

from __future__ import annotations

import base64
import gzip
import json
import logging
import ssl
import threading
import zlib
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from google.rpc import status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from otel_lightning_collector.auth import TokenCheck
from otel_lightning_collector.tls import HandshakeOnConnectionThread
from otel_lightning_collector.trace_intake import ExportRefusedError, TraceIntake

logger = logging.getLogger(__name__)

TRACES_PATH = "/v1/traces"
OTHER_SIGNAL_PATHS = ("/v1/metrics", "/v1/logs")
PROTOBUF = "application/x-protobuf"
JSON = "application/json"
RETRY_AFTER_S = 1
_ID_FIELDS = ("traceId", "spanId", "parentSpanId")
# The gRPC method each path stands for, for the role check.
_GRPC_METHODS = {
    "/v1/traces": "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
    "/v1/metrics": "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
    "/v1/logs": "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
}
_RPC_CODES = {
    HTTPStatus.SERVICE_UNAVAILABLE: 14,
    HTTPStatus.UNAUTHORIZED: 16,
    HTTPStatus.FORBIDDEN: 7,
    HTTPStatus.NOT_FOUND: 5,
    HTTPStatus.REQUEST_ENTITY_TOO_LARGE: 8,
}


class BadRequestError(ValueError):
    """The request cannot be read; the exporter must not send it again."""


def _ids_to_base64(holder: dict[str, Any]) -> None:
    # OTLP/JSON writes ids as hex strings; protobuf's JSON mapping expects bytes as base64.
    for name in _ID_FIELDS:
        value = holder.get(name)
        if isinstance(value, str) and value:
            try:
                holder[name] = base64.b64encode(bytes.fromhex(value)).decode()
            except ValueError as error:
                raise BadRequestError(f"{name} {value[:40]!r} is not hex: {error}") from None


def parse_json_request(body: bytes) -> ExportTraceServiceRequest:
    """An ExportTraceServiceRequest from its OTLP/JSON encoding (unknown fields ignored, as the spec says)."""
    try:
        document = json.loads(body)
        for resource_spans in document.get("resourceSpans") or ():
            for scope_spans in resource_spans.get("scopeSpans") or ():
                for span in scope_spans.get("spans") or ():
                    _ids_to_base64(span)
                    for link in span.get("links") or ():
                        _ids_to_base64(link)
        return json_format.ParseDict(document, ExportTraceServiceRequest(), ignore_unknown_fields=True)
    except (ValueError, AttributeError, TypeError, json_format.ParseError) as error:
        raise BadRequestError(f"malformed OTLP/JSON ExportTraceServiceRequest: {error}") from None


def _decompress(body: bytes, encoding: str) -> bytes:
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding == "gzip":
        try:
            return gzip.decompress(body)
        except (OSError, EOFError, zlib.error) as error:
            raise BadRequestError(f"gzip body cannot be decompressed: {error}") from None
    raise BadRequestError(f"unsupported Content-Encoding {encoding!r}; use gzip or none")


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s " + format, self.address_string(), *args)

    def do_POST(self) -> None:
        path = self.path.split("?", 1)[0]
        content_type = self.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
        as_json = content_type == JSON
        if path not in (TRACES_PATH, *OTHER_SIGNAL_PATHS):
            self._drain()
            return self._error(HTTPStatus.NOT_FOUND, f"no OTLP endpoint at {path}; traces go to {TRACES_PATH}", as_json)
        if content_type not in (PROTOBUF, JSON):
            self._drain()
            return self._error(
                HTTPStatus.UNSUPPORTED_MEDIA_TYPE, f"Content-Type must be {PROTOBUF} or {JSON}, not {content_type!r}"
            )
        refused = self.server.tokens.check(_GRPC_METHODS[path], self.headers.get("Authorization"))
        if refused is not None:
            self._drain()
            code, message = refused
            if code == grpc.StatusCode.UNAUTHENTICATED:
                return self._error(HTTPStatus.UNAUTHORIZED, message, as_json, headers={"WWW-Authenticate": "Bearer"})
            return self._error(HTTPStatus.FORBIDDEN, message, as_json)
        intake = self.server.intake
        try:
            body = self._body()
            if path != TRACES_PATH:
                intake.count(other_signal_requests=1)
                return self._reply(HTTPStatus.OK, b"{}" if as_json else b"", as_json)
            if as_json:
                request, raw = parse_json_request(body), None
            else:
                try:
                    request, raw = ExportTraceServiceRequest.FromString(body), body
                except DecodeError as error:
                    raise BadRequestError(f"malformed OTLP ExportTraceServiceRequest: {error}") from None
        except BadRequestError as error:
            intake.count(requests_malformed=1)
            return self._error(HTTPStatus.BAD_REQUEST, str(error), as_json)
        except _TooLargeError as error:
            intake.count(requests_malformed=1)
            return self._error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, str(error), as_json)
        try:
            response = intake.export(request, raw)
        except ExportRefusedError as refused:
            return self._error(HTTPStatus.SERVICE_UNAVAILABLE, str(refused), as_json, retry_after=True)
        self._reply(HTTPStatus.OK, self._encode(response, as_json), as_json)

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        limit = self.server.max_body_bytes
        if length > limit:
            self.close_connection = True
            raise _TooLargeError(f"request body of {length} bytes is over the {limit}-byte limit")
        body = _decompress(self.rfile.read(length), self.headers.get("Content-Encoding", ""))
        if len(body) > limit:
            raise _TooLargeError(f"decompressed body of {len(body)} bytes is over the {limit}-byte limit")
        return body

    def _drain(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length <= self.server.max_body_bytes:
            self.rfile.read(length)
        else:
            self.close_connection = True

    @staticmethod
    def _encode(message: Message, as_json: bool) -> bytes:
        if as_json:
            return json_format.MessageToJson(message, indent=None).encode()
        return message.SerializeToString()

    def _error(
        self,
        status: HTTPStatus,
        message: str,
        as_json: bool = False,
        *,
        retry_after: bool = False,
        headers: dict[str, str] | None = None,
    ) -> None:
        code = _RPC_CODES.get(status, 3)  # google.rpc.Code; INVALID_ARGUMENT for bad requests
        body = self._encode(status_pb2.Status(code=code, message=message), as_json)
        headers = {**(headers or {}), **({"Retry-After": str(RETRY_AFTER_S)} if retry_after else {})}
        self._reply(status, body, as_json, headers)

    def _reply(self, status: HTTPStatus, body: bytes, as_json: bool, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", JSON if as_json else PROTOBUF)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)


class _TooLargeError(ValueError):
    pass


class _Server(HandshakeOnConnectionThread, ThreadingHTTPServer):
    daemon_threads = True
    intake: TraceIntake
    max_body_bytes: int
    tokens: TokenCheck


class OtlpHttpReceiver:
    """`start()` serves on `listen` (host:port; port 0 for any) in a thread; `address` is the bound one."""

    def __init__(
        self,
        intake: TraceIntake,
        listen: str,
        *,
        max_body_bytes: int = 64 * 1024 * 1024,
        tokens: TokenCheck | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        host, _, port = listen.rpartition(":")
        self._server = _Server((host.strip("[]") or "127.0.0.1", int(port)), _Handler)
        self._server.intake = intake
        self._server.max_body_bytes = max_body_bytes
        self._server.tokens = tokens or TokenCheck({})
        self._server.tls = tls
        self.scheme = "https" if tls else "http"
        self.port = self._server.server_address[1]
        self.address = f"{host}:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="otlp-http", daemon=True)

    @property
    def endpoint(self) -> str:
        return f"{self.scheme}://{self.address}{TRACES_PATH}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()
