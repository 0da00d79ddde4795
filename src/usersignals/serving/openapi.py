"""The OpenAPI document of the HTTP API, and a self-contained page that browses it."""

from __future__ import annotations

from typing import Any

import msgspec

from usersignals._version import __version__
from usersignals.events.model import Event
from usersignals.serving.reader import UserSignals
from usersignals.serving.schemas import BatchRequest, DeleteResponse, ErrorBody, IngestResponse
from usersignals.signals.registry import SignalRegistry

_CONTEXT_DOCS = {
    "window": "Only events in this duration before the end of the view: 90s, 15m, 1h, 7d, 2w.",
    "actions": "Comma-separated actions to keep, e.g. save,click.",
    "surfaces": "Comma-separated surfaces to keep, e.g. home,search.",
    "since": "Only events at or after this time (ms since the epoch, or ISO 8601 with a zone).",
    "until": "Only events at or before this time (ms since the epoch, or ISO 8601 with a zone).",
    "limit": "At most this many entries (1..10000).",
    "dedupe": "One entry per item (true/false).",
    "exclude": "Comma-separated item ids (or keys, for scores) to leave out.",
    "as_of": "Read as of this time (default: now).",
}


_REASONS = {
    400: "A parameter or the body is invalid; the message names it.",
    401: "Missing bearer token (the route's token is configured).",
    403: "Wrong bearer token, or the endpoint is disabled.",
    404: "Unknown signal.",
    410: "A signal version retired by a cut-over, its grace period over: its state is no "
    "longer kept (retired_signal: names the version to read instead, or what is wrong).",
    413: "Body too large.",
    415: "A compressed body (Content-Encoding other than identity): send it uncompressed.",
    422: "A signal cannot answer the as_of exactly (as_of_unavailable: names the signal, the "
    "user and the earliest as_of it answers for them), or the body does not match its schema.",
    503: "Not ready: the store does not answer in time, or the processor writing it runs "
    "other signals (the message says which).",
}
#: Where a route's answer means something else than in :data:`_REASONS`.
_INGEST_REASONS = {
    422: "No event was valid (each rejection listed with its reason), or the body does not "
    "match its schema.",
    503: "Not kept (Retry-After): the spool's backlog or disk is full, or the broker did not "
    "acknowledge.",
}


def _error_responses(*codes: int, reasons: dict[int, str] | None = None) -> dict[str, Any]:
    said = {**_REASONS, **(reasons or {})}
    return {
        str(code): {
            "description": said[code],
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
        }
        for code in codes
    }


_BATCH_ANSWER = {
    "type": "object",
    "properties": {
        "results": {"type": "array", "items": {"$ref": "#/components/schemas/UserSignals"}}
    },
}
_EVENTS = {
    "oneOf": [
        {"$ref": "#/components/schemas/Event"},
        {"type": "array", "items": {"$ref": "#/components/schemas/Event"}},
    ]
}


#: A 422 of ``POST /v1/events``: no event was valid (the ingest answer), or the body is not
#: the schema's.
_INGEST_REFUSED = {
    "application/json": {
        "schema": {
            "oneOf": [
                {"$ref": "#/components/schemas/IngestResponse"},
                {"$ref": "#/components/schemas/ErrorBody"},
            ]
        }
    }
}


def _json_content(name: str) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}}


def openapi_document(registry: SignalRegistry, max_user_id_chars: int = 128) -> dict[str, Any]:
    """The document; user ids are bounded as ingest bounds them (``events.max_user_id_chars``)."""
    (_, components) = msgspec.json.schema_components(
        [UserSignals, BatchRequest, ErrorBody, IngestResponse, DeleteResponse, Event],
        ref_template="#/components/schemas/{name}",
    )
    user_path = {
        "name": "user_id",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "minLength": 1, "maxLength": max_user_id_chars},
    }
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "usersignals",
            "version": __version__,
            "description": "Fresh per-user signals, read with a request-time context.",
        },
        "paths": {
            **_read_paths(registry.names, user_path),
            **_write_paths(user_path),
            **_service_paths(),
        },
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def _query(names: list[str]) -> list[dict[str, Any]]:
    """The query parameters of a read: the signal names, then the context."""
    return [
        {
            "name": "names",
            "in": "query",
            "required": False,
            "description": f"Comma-separated signal names (default: all): {', '.join(names)}.",
            "schema": {"type": "string"},
        },
        *(
            {
                "name": name,
                "in": "query",
                "required": False,
                "description": text,
                "schema": {"type": "string"},
            }
            for name, text in _CONTEXT_DOCS.items()
        ),
    ]


def _read_paths(names: list[str], user_path: dict[str, Any]) -> dict[str, Any]:
    return {
        "/v1/users/{user_id}/signals": {
            "get": {
                "summary": "One user's signals, with a request-time context",
                "parameters": [user_path, *_query(names)],
                "responses": {
                    "200": {"description": "The signals", "content": _json_content("UserSignals")},
                    **_error_responses(400, 401, 403, 404, 410, 422, 503),
                },
            }
        },
        "/v1/signals/batch": {
            "post": {
                "summary": "Many users x many signals, one context or one per signal",
                "requestBody": {"required": True, "content": _json_content("BatchRequest")},
                "responses": {
                    "200": {
                        "description": "One result per user, in order",
                        "content": {"application/json": {"schema": _BATCH_ANSWER}},
                    },
                    **_error_responses(400, 401, 403, 404, 410, 413, 415, 422, 503),
                },
            }
        },
        "/v1/signals": {
            "get": {
                "summary": "The registered signals and their compiled definitions",
                "responses": {
                    "200": {
                        "description": "Compiled definitions as declared (signals), the "
                        "version each name serves by default now (served), the versions a "
                        "cut-over replaced with until when they are answered (retiring), and "
                        "those whose grace period is over, with when (retired)"
                    },
                    **_error_responses(401, 403),
                },
            }
        },
    }


def _write_paths(user_path: dict[str, Any]) -> dict[str, Any]:
    return {
        "/v1/events": {
            "post": {
                "summary": "Ingest one event or an array of events (durable before 202)",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _EVENTS}},
                },
                "responses": {
                    "202": {"description": "Accepted", "content": _json_content("IngestResponse")},
                    **_error_responses(400, 401, 403, 413, 415, 422, 503, reasons=_INGEST_REASONS),
                    # No event valid: the ingest answer, each rejection with its reason.
                    "422": {"description": _INGEST_REASONS[422], "content": _INGEST_REFUSED},
                },
            }
        },
        "/v1/users/{user_id}": {
            "delete": {
                "summary": "Forget a user's state (admin token required)",
                "parameters": [user_path],
                "security": [{"bearer": []}],
                "responses": {
                    "202": {"description": "Queued", "content": _json_content("DeleteResponse")},
                    **_error_responses(400, 401, 403, 503, reasons=_INGEST_REASONS),
                },
            }
        },
    }


def _service_paths() -> dict[str, Any]:
    return {
        "/healthz": {
            "get": {"summary": "Liveness", "responses": {"200": {"description": "Alive"}}}
        },
        "/readyz": {
            "get": {
                "summary": "Readiness: the store view is fresh",
                "responses": {
                    "200": {"description": "Ready"},
                    "503": {"description": "Stale view of the store"},
                },
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics",
                "responses": {"200": {"description": "Metrics"}},
            }
        },
    }


# A page with no external assets (the machines it runs on may have no internet access).
DOCS_HTML = """<!doctype html>
<html><head><meta charset="utf-8"><title>usersignals API</title>
<style>body{font:15px/1.5 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem}
code{background:#f3f3f3;padding:0 .25rem}
.op{margin:1.2rem 0;padding:.6rem 1rem;border:1px solid #ddd;border-radius:6px}
.m{font-weight:bold;text-transform:uppercase;margin-right:.5rem}
td{padding:.1rem .6rem;vertical-align:top}</style></head>
<body><h1>usersignals API</h1><p>The machine-readable document is at
<a href="/openapi.json"><code>/openapi.json</code></a>.</p><div id="ops">loading…</div>
<script>
fetch('/openapi.json').then(r => r.json()).then(doc => {
  const out = [];
  for (const [path, ops] of Object.entries(doc.paths)) {
    for (const [method, op] of Object.entries(ops)) {
      const params = (op.parameters || []).map(p =>
        `<tr><td><code>${p.name}</code></td><td>${p.in}</td><td>${p.description || ''}</td></tr>`
      ).join('');
      const codes = Object.entries(op.responses)
        .map(([c, r]) => `<code>${c}</code> ${r.description}`).join('<br>');
      const table = params ? '<table>' + params + '</table>' : '';
      out.push(`<div class="op"><span class="m">${method}</span><code>${path}</code>
        <p>${op.summary || ''}</p>${table}<p>${codes}</p></div>`);
    }
  }
  document.getElementById('ops').innerHTML = out.join('');
});
</script></body></html>
"""
