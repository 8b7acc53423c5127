"""TLS for the collector's HTTP servers (OTLP/HTTP, metrics): the context and the per-connection handshake."""

from __future__ import annotations

import logging
import socket
import ssl
from typing import Any

logger = logging.getLogger(__name__)


def server_context(cert_file: str | None, key_file: str | None) -> ssl.SSLContext | None:
    """A server-side context for this certificate chain and key; None without a certificate."""
    if not cert_file:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    return context


class HandshakeOnConnectionThread:
    """Mixin for a threading socketserver: with `tls` set, each accepted connection is wrapped on its
    own thread, so a slow or broken handshake never stalls the accept loop."""

    tls: ssl.SSLContext | None = None
    # A client that starts a handshake and never finishes it must not hold its thread.
    handshake_timeout_s: float = 10.0

    def finish_request(self, request: socket.socket, client_address: Any) -> None:
        if self.tls is not None:
            try:
                request.settimeout(self.handshake_timeout_s)
                request = self.tls.wrap_socket(request, server_side=True)
            except (ssl.SSLError, OSError) as error:
                logger.info("TLS handshake with %s failed: %s", client_address, error)
                return
        super().finish_request(request, client_address)  # type: ignore[misc]
