"""Receive notifications and verify them with the Standard Webhooks library before trusting them.

    CMH_WEBHOOK_SECRET=whsec_... python examples/verify_webhook.py 8080

Check the signature over the raw body, before parsing it; drop a `webhook-id` you have already
handled (a delivery is retried under the same id until you answer 2xx).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

from standardwebhooks import Webhook, WebhookVerificationError


def verify_notification(secret: str, body: bytes, headers: dict[str, str]) -> dict[str, Any]:
    """The notification Bundle, or WebhookVerificationError (bad signature, old timestamp)."""
    bundle: dict[str, Any] = Webhook(secret).verify(body, headers)
    return bundle


def focus_of(bundle: dict[str, Any]) -> str:
    """What changed: `ServiceRequest/<id> is <status>`."""
    resource = bundle["entry"][1]["resource"]
    return f"{resource['resourceType']}/{resource['id']} is {resource['status']}"


def handler(secret: str, seen: set[str]) -> type[BaseHTTPRequestHandler]:
    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            headers = {name: value for name, value in self.headers.items()}
            try:
                bundle = verify_notification(secret, body, headers)
            except WebhookVerificationError:
                self.send_response(400)
                self.end_headers()
                return
            if headers["webhook-id"] not in seen:
                seen.add(headers["webhook-id"])
                print(f"notified: {focus_of(bundle)}", flush=True)
            self.send_response(204)
            self.end_headers()

    return Receiver


def main(argv: list[str] | None = None, ready: Callable[[HTTPServer], None] | None = None) -> int:
    """Serve until stopped (`ready` is handed the server, so a caller can shut it down)."""
    args = argv if argv is not None else sys.argv[1:]
    port = int(args[0]) if args else 8080
    server = HTTPServer(("127.0.0.1", port), handler(os.environ["CMH_WEBHOOK_SECRET"], set()))
    print(f"listening on http://127.0.0.1:{port}/", flush=True)
    if ready is not None:
        ready(server)
    server.serve_forever()
    server.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
