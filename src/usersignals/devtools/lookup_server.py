"""A stand-alone HTTP batch lookup service for bench/materializer.py (the documented contract).

python bench/lookup_server.py ITEMS.jsonl PORT
"""

from __future__ import annotations

import json
import socket
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar


def make_handler(records: dict[str, Any]) -> type[BaseHTTPRequestHandler]:
    class Handler(_LookupHandler):
        table = records

    return Handler


def serve(records: dict[str, Any], port: int = 0) -> ThreadingHTTPServer:
    """A server (not yet serving: call ``serve_forever``) on 127.0.0.1 for ``records``."""
    return ThreadingHTTPServer(("127.0.0.1", port), make_handler(records))


class _LookupHandler(BaseHTTPRequestHandler):
    table: ClassVar[dict[str, Any]] = {}
    protocol_version = "HTTP/1.1"  # keep-alive, as a real service would

    def setup(self) -> None:
        super().setup()
        # Headers and body leave in two writes: without TCP_NODELAY, Nagle's algorithm and
        # the client's delayed ACK add ~40 ms to every small answer.
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_POST(self) -> None:
        keys = json.loads(self.rfile.read(int(self.headers["content-length"])))["keys"]
        table = self.table
        body = json.dumps({"records": {k: table[k] for k in keys if k in table}}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        return None


def main() -> None:
    items, port = sys.argv[1], int(sys.argv[2])
    key = sys.argv[3] if len(sys.argv) > 3 else "item_id"
    records: dict[str, Any] = {}
    with open(items, "rb") as handle:
        for line in handle:
            record = json.loads(line)
            records[str(record[key])] = record
    server = serve(records, port)
    print("ready", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
