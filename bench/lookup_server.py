"""A stand-alone HTTP batch lookup service for bench/materializer.py (the documented contract).

python bench/lookup_server.py ITEMS.jsonl PORT
"""

from __future__ import annotations

import json
import socket
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

RECORDS: dict[str, Any] = {}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as a real service would

    def setup(self) -> None:
        super().setup()
        # Headers and body leave in two writes: without TCP_NODELAY, Nagle's algorithm and
        # the client's delayed ACK add ~40 ms to every small answer.
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_POST(self) -> None:
        keys = json.loads(self.rfile.read(int(self.headers["content-length"])))["keys"]
        body = json.dumps({"records": {k: RECORDS[k] for k in keys if k in RECORDS}}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        return None


def main() -> None:
    items, port = sys.argv[1], int(sys.argv[2])
    with open(items, "rb") as handle:
        for line in handle:
            record = json.loads(line)
            RECORDS[record["item_id"]] = record
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    print("ready", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
