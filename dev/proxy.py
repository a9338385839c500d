"""Forwarding one request from a local stand-in proxy (an http.server handler) to the local BigQuery."""

from __future__ import annotations

import http.client
from collections.abc import Mapping
from email.message import Message
from http.server import BaseHTTPRequestHandler
from urllib.parse import SplitResult


def send(target: SplitResult, method: str, path: str, body: bytes,
         headers: Mapping[str, str] | Message) -> tuple[int, dict[str, str], bytes]:
    """Send one request to ``target``; return the answer's status, headers and body."""
    if target.hostname is None:
        raise ValueError(f"{target.geturl()!r} names no host to forward to")
    upstream = http.client.HTTPConnection(target.hostname, target.port, timeout=120)
    forwarded = {k: v for k, v in headers.items() if k.lower() not in ("host", "connection")}
    upstream.request(method, path, body=body, headers=forwarded)
    response = upstream.getresponse()
    data = response.read()
    upstream.close()
    return response.status, dict(response.getheaders()), data


def answer(handler: BaseHTTPRequestHandler, status: int, headers: Mapping[str, str], data: bytes) -> None:
    """Write an answer back through the handler, framed by length."""
    handler.send_response(status)
    for name, value in headers.items():
        if name.lower() not in ("transfer-encoding", "connection", "content-length"):
            handler.send_header(name, value)
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


def forward(handler: BaseHTTPRequestHandler, target: SplitResult, body: bytes) -> None:
    """Send the handler's request (with ``body``) to ``target`` and write the answer back."""
    answer(handler, *send(target, handler.command, handler.path, body, handler.headers))
