"""A webhook receiver that checks SSAH-Signature before it trusts a job's end (standard library only).

SSAH_WEBHOOK_SECRET=... python examples/webhook_receiver.py 8080
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import sys
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def verify(secret: str, header: str, body: bytes, tolerance: float = 300) -> bool:
    """``SSAH-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>." + body>``, at most ``tolerance`` s old."""
    parts = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    if not parts.get("t", "").isdigit() or abs(time.time() - int(parts["t"])) > tolerance:
        return False
    expected = hmac.new(secret.encode(), parts["t"].encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, parts.get("v1", ""))


def make_server(secret: str, port: int, on_job: Callable[[str, dict[str, Any]], None]) -> ThreadingHTTPServer:
    """A server on 127.0.0.1:``port`` calling ``on_job(event, job)`` for each correctly signed delivery."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if not verify(secret, self.headers.get("SSAH-Signature", ""), body):
                self.send_response(401)  # not from our server, or replayed long after: ignore it
            else:
                on_job(self.headers["SSAH-Event"], json.loads(body))  # SSAH-Delivery tells repeats apart
                self.send_response(204)
            self.end_headers()

    return ThreadingHTTPServer(("127.0.0.1", port), Handler)


if __name__ == "__main__":

    def show(event: str, job: dict[str, Any]) -> None:
        print(event, job["kind"], job["id"], "gate passed:", (job.get("gate") or {}).get("passed"), flush=True)

    make_server(os.environ["SSAH_WEBHOOK_SECRET"], int(sys.argv[1]), show).serve_forever()
