"""The OTLP/HTTP receiver: `POST /v1/traces`, binary protobuf or JSON, same semantics as gRPC.

Per the OTLP/HTTP spec: the response comes in the request's encoding; bad data gets 400 with a
`google.rpc.Status`; a refused export 503 with `Retry-After` (exporters retry); gzip request
bodies are accepted. `/v1/metrics` and `/v1/logs` are acknowledged and not kept, as over gRPC.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import socket
import ssl
import threading
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from google.rpc import status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from otel_lightning import semconv
from otel_lightning_collector.auth import TokenCheck
from otel_lightning_collector.export_tickets import ExportTicket
from otel_lightning_collector.http_limits import (
    BadRequestError,
    DeadlineSocketReader,
    TooLargeError,
    content_length,
    discard,
    drain_after_reply,
    read_body,
)
from otel_lightning_collector.tls import HandshakeOnConnectionThread
from otel_lightning_collector.trace_intake import ExportRefusedError, RequestTooLargeError, TraceIntake

logger = logging.getLogger(__name__)

TRACES_PATH = "/v1/traces"
OTHER_SIGNAL_PATHS = ("/v1/metrics", "/v1/logs")
# Late feedback as JSON (`otel-lightning feedback` over HTTP): {"trace_id"|"rollout_id"|"response_id", "score", "name"}.
FEEDBACK_PATH = "/v1/feedback"
# Arize Phoenix's span annotations (its client's `spans.add_span_annotation`), as rewards: see annotations.py.
SPAN_ANNOTATIONS_PATH = semconv.PHOENIX_SPAN_ANNOTATIONS_PATH
PROTOBUF = "application/x-protobuf"
JSON = "application/json"
RETRY_AFTER_S = 1
_ID_FIELDS = ("traceId", "spanId", "parentSpanId")
# The gRPC method each path stands for, for the role check.
_GRPC_METHODS = {
    "/v1/traces": "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
    "/v1/metrics": "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
    "/v1/logs": "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
    "/v1/feedback": "/otel_lightning.v1.Feedback/Record",
    # Annotations are feedback: the same roles may send them.
    SPAN_ANNOTATIONS_PATH: "/otel_lightning.v1.Feedback/Record",
}
_RPC_CODES = {
    HTTPStatus.SERVICE_UNAVAILABLE: 14,
    HTTPStatus.TOO_MANY_REQUESTS: 8,
    HTTPStatus.UNAUTHORIZED: 16,
    HTTPStatus.FORBIDDEN: 7,
    HTTPStatus.NOT_FOUND: 5,
    HTTPStatus.REQUEST_ENTITY_TOO_LARGE: 8,
    HTTPStatus.REQUEST_TIMEOUT: 4,
}
# An unwanted body (wrong path, refused token) this small is read and dropped to keep the
# connection; a larger one is not read: the answer is sent and the connection closed.
_KEEP_ALIVE_DISCARD = 1024 * 1024
# OTLP/JSON nests resource > scope > span > attribute > value; AnyValue arrays and kvlists nest
# further. Protobuf's own binary decoder stops at 100 levels; JSON gets the same bound, checked
# before protobuf's recursive parser sees the document.
MAX_JSON_DEPTH = 100


def _ids_to_base64(holder: dict[str, Any]) -> None:
    # OTLP/JSON writes ids as hex strings; protobuf's JSON mapping expects bytes as base64.
    for name in _ID_FIELDS:
        value = holder.get(name)
        if isinstance(value, str) and value:
            try:
                holder[name] = base64.b64encode(bytes.fromhex(value)).decode()
            except ValueError as error:
                raise BadRequestError(f"{name} {value[:40]!r} is not hex: {error}") from None


def _check_depth(document: Any, max_depth: int) -> None:
    """BadRequestError when lists and objects nest deeper than `max_depth` (walked without recursion)."""
    stack = [(document, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > max_depth:
            raise BadRequestError(f"JSON nests deeper than {max_depth} levels")
        children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))


def parse_json_request(body: bytes) -> ExportTraceServiceRequest:
    """An ExportTraceServiceRequest from its OTLP/JSON encoding (unknown fields ignored, as the spec says)."""
    try:
        try:
            document = json.loads(body)
        except RecursionError:
            raise BadRequestError(f"JSON nests deeper than {MAX_JSON_DEPTH} levels") from None
        _check_depth(document, MAX_JSON_DEPTH)
        for resource_spans in document.get("resourceSpans") or ():
            for scope_spans in resource_spans.get("scopeSpans") or ():
                for span in scope_spans.get("spans") or ():
                    _ids_to_base64(span)
                    for link in span.get("links") or ():
                        _ids_to_base64(link)
        return json_format.ParseDict(document, ExportTraceServiceRequest(), ignore_unknown_fields=True)
    except BadRequestError:
        raise
    except (ValueError, AttributeError, TypeError, RecursionError, json_format.ParseError) as error:
        raise BadRequestError(f"malformed OTLP/JSON ExportTraceServiceRequest: {error}") from None


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        # Every read has a timeout and every request a deadline: a slow client cannot hold a thread.
        self._reader = DeadlineSocketReader(self.connection, self.server.read_timeout_s, self.server.request_timeout_s)
        self.rfile = io.BufferedReader(self._reader, 64 * 1024)
        self._linger = False

    def handle_one_request(self) -> None:
        self._reader.start_request()
        super().handle_one_request()

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s " + format, self.address_string(), *args)

    def do_POST(self) -> None:
        path = self.path.split("?", 1)[0]
        content_type = self.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
        as_json = content_type == JSON
        intake = self.server.intake
        try:
            length = content_length(self.headers)
        except BadRequestError as error:
            # Without a length the body's end is unknown: answer, then close the connection.
            intake.count(requests_malformed=1)
            return self._refuse(HTTPStatus.BAD_REQUEST, str(error), as_json, length=-1)
        if path not in (TRACES_PATH, FEEDBACK_PATH, SPAN_ANNOTATIONS_PATH, *OTHER_SIGNAL_PATHS):
            return self._refuse(
                HTTPStatus.NOT_FOUND, f"no OTLP endpoint at {path}; traces go to {TRACES_PATH}", as_json, length=length
            )
        if content_type not in (PROTOBUF, JSON):
            return self._refuse(
                HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                f"Content-Type must be {PROTOBUF} or {JSON}, not {content_type!r}",
                length=length,
            )
        # The token is checked before a byte of the body is read.
        refused = self.server.tokens.check(_GRPC_METHODS[path], self.headers.get("Authorization"))
        if refused is not None:
            code, message = refused
            if code == grpc.StatusCode.UNAUTHENTICATED:
                return self._refuse(
                    HTTPStatus.UNAUTHORIZED, message, as_json, length=length, headers={"WWW-Authenticate": "Bearer"}
                )
            return self._refuse(HTTPStatus.FORBIDDEN, message, as_json, length=length)
        if path == TRACES_PATH:
            # Numbered on arrival, before its body is read, as gRPC's interceptor does: a rollout whose root
            # is acknowledged meanwhile waits for this request too (export_tickets).
            with intake.activity.exporting() as ticket:
                return self._receive(path, content_type, as_json, ticket)
        return self._receive(path, content_type, as_json, None)

    def _receive(self, path: str, content_type: str, as_json: bool, ticket: ExportTicket | None) -> None:
        """Read, decode and take one authorised request (its ticket: see do_POST)."""
        intake = self.server.intake
        limit = min(self.server.max_body_bytes, self.server.max_json_bytes) if as_json else self.server.max_body_bytes
        body_read = False
        try:
            body = read_body(self.rfile, self.headers, limit)
            body_read = True
            if path == FEEDBACK_PATH and self.server.feedback is not None:
                status, answer = self.server.feedback.http(body)
                return self._reply(status, answer, True)
            if path == SPAN_ANNOTATIONS_PATH:
                if self.server.annotations is None:
                    return self._error(HTTPStatus.NOT_FOUND, "this collector takes no span annotations", True)
                status, answer = self.server.annotations.http(body, self.path.partition("?")[2])
                return self._reply(status, answer, True)
            if path != TRACES_PATH:
                intake.count(other_signal_requests=1)
                if self.server.signals is not None:
                    # Logs are kept (GenAI events, evaluations), metrics forwarded: see signal_intake.
                    try:
                        self.server.signals.export(path.rsplit("/", 1)[1], body, as_json)
                    except ExportRefusedError as refused:
                        retry_after = {"Retry-After": str(max(1, round(refused.retry_after_s)))}
                        return self._error(HTTPStatus.SERVICE_UNAVAILABLE, str(refused), as_json, headers=retry_after)
                    except ValueError as error:
                        raise BadRequestError(str(error)) from None
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
            # A body read to its end leaves the connection usable; one partly read does not.
            return self._refuse(HTTPStatus.BAD_REQUEST, str(error), as_json, length=0 if body_read else -1)
        except TooLargeError as error:
            intake.count(requests_malformed=1)
            return self._refuse(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, str(error), as_json, length=-1)
        except TimeoutError:
            intake.count(requests_malformed=1)
            self.close_connection = True
            message = f"the request was not received within {self.server.request_timeout_s:g} s"
            return self._error(HTTPStatus.REQUEST_TIMEOUT, message, as_json)
        try:
            response = intake.export(request, raw, ticket)
        except RequestTooLargeError as error:
            return self._error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, str(error), as_json)
        except ExportRefusedError as refused:
            # The OTLP spec's throttling: 429 when the client sends more than it may, 503 when we are overloaded.
            status = HTTPStatus.TOO_MANY_REQUESTS if refused.throttled else HTTPStatus.SERVICE_UNAVAILABLE
            retry_after = {"Retry-After": str(max(1, round(refused.retry_after_s)))}
            return self._error(status, str(refused), as_json, headers=retry_after)
        self._reply(HTTPStatus.OK, self._encode(response, as_json), as_json)

    def _refuse(
        self,
        status: HTTPStatus,
        message: str,
        as_json: bool = False,
        *,
        length: int | None,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Answer without reading the body: a small one is read and dropped (the connection stays
        open), otherwise the answer is sent, the connection closed, and what the client is still
        sending drained for a bounded time so it reads the answer (not a reset)."""
        if length is not None and length >= 0 and discard(self.rfile, length, _KEEP_ALIVE_DISCARD):
            return self._error(status, message, as_json, headers=headers)
        self.close_connection = True
        self._linger = True
        self._error(status, message, as_json, headers=headers)

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
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)
        if self._linger:
            # Up to twice the limit: a body just over it is read to its end and the client hears the answer.
            drain_after_reply(self.connection, 2 * self.server.max_body_bytes, self.server.request_timeout_s)


class _Server(HandshakeOnConnectionThread, ThreadingHTTPServer):
    """A thread per connection, at most `max_connections` of them: one more is answered 503 and closed."""

    daemon_threads = True
    # socketserver's default backlog of 5 resets connections that arrive together (many exporters).
    request_queue_size = 128
    intake: TraceIntake
    max_body_bytes: int
    max_json_bytes: int
    read_timeout_s: float
    request_timeout_s: float
    tokens: TokenCheck
    connections: threading.BoundedSemaphore

    def process_request(self, request: socket.socket, client_address: Any) -> None:
        if not self.connections.acquire(blocking=False):
            logger.warning("OTLP/HTTP: %s refused, %d connections open already", client_address, self.max_connections)
            if self.tls is None:  # plain text can be answered before the request is read
                try:
                    request.sendall(_BUSY)
                except OSError:
                    pass
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.connections.release()
            raise

    def process_request_thread(self, request: socket.socket, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.connections.release()

    @property
    def max_connections(self) -> int:
        return self._max_connections

    @max_connections.setter
    def max_connections(self, value: int) -> None:
        self._max_connections = value
        self.connections = threading.BoundedSemaphore(value)


_BUSY = b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


@dataclass(frozen=True)
class HttpLimits:
    """Bounds of the OTLP/HTTP receiver besides the body size (`max_body_bytes`, shared with gRPC)."""

    # JSON costs ~25x its size in memory to parse (dicts, then messages); protobuf ~3x.
    max_json_bytes: int = 16 * 1024 * 1024
    # The longest wait for any one read, and for a whole request (headers and body).
    read_timeout_s: float = 10.0
    request_timeout_s: float = 60.0
    # Connections served at once (a thread each); one more is answered 503 and closed.
    max_connections: int = 256


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
        limits: HttpLimits | None = None,
    ) -> None:
        limits = limits or HttpLimits()
        host, _, port = listen.rpartition(":")
        self._server = _Server((host.strip("[]") or "127.0.0.1", int(port)), _Handler)
        self._server.intake = intake
        # Set by the collector: logs and metrics (signal_intake.SignalIntake), feedback (feedback_service).
        self._server.signals = None
        self._server.feedback = None
        self._server.annotations = None  # annotations.SpanAnnotationService
        self._server.max_body_bytes = max_body_bytes
        self._server.max_json_bytes = limits.max_json_bytes
        self._server.read_timeout_s = limits.read_timeout_s
        self._server.request_timeout_s = limits.request_timeout_s
        self._server.max_connections = limits.max_connections
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
