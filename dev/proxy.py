"""Forwarding one request from a local stand-in proxy (an http.server handler) to the local BigQuery."""

from __future__ import annotations

import http.client
from http.server import BaseHTTPRequestHandler
from urllib.parse import SplitResult


def forward(handler: BaseHTTPRequestHandler, target: SplitResult, body: bytes) -> None:
    """Send the handler's request (with ``body``) to ``target`` and write the answer back, framed by length."""
    upstream = http.client.HTTPConnection(target.hostname, target.port, timeout=120)
    headers = {k: v for k, v in handler.headers.items() if k.lower() not in ("host", "connection")}
    upstream.request(handler.command, handler.path, body=body, headers=headers)
    response = upstream.getresponse()
    data = response.read()
    handler.send_response(response.status)
    for name, value in response.getheaders():
        if name.lower() not in ("transfer-encoding", "connection", "content-length"):
            handler.send_header(name, value)
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)
    upstream.close()
