"""Deleting a user, health and readiness, metrics, and the API's own description."""

from __future__ import annotations

import asyncio
import time

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from usersignals.serving.error_handlers import error_response, json_response
from usersignals.serving.guards import bearer, given_token_problem, unauthorized
from usersignals.serving.inputs import user_id_of
from usersignals.serving.openapi import DOCS_HTML
from usersignals.serving.schemas import DeleteResponse
from usersignals.serving.state import serving_state


async def delete_user(request: Request) -> Response:
    """Queue a user's deletion; needs the admin token, and no admin token disables it."""
    state = serving_state(request)
    user_id = user_id_of(request, state.max_user_id_chars)
    # Disabled first: a 401 would invite a token that no token can satisfy.
    if not state.admin_token:
        return error_response(403, "forbidden", "the admin endpoint is disabled (no admin token)")
    if not request.headers.get("authorization"):
        headers = {"WWW-Authenticate": "Bearer"}
        return error_response(401, "unauthorized", "missing bearer token", headers)
    problem = given_token_problem(bearer(request), state.admin_token, "admin")
    if problem is not None:
        return unauthorized(*problem)
    await asyncio.to_thread(state.log.delete_user, user_id)
    return json_response(DeleteResponse(user_id, "deletion queued"), 202)


async def healthz(request: Request) -> Response:
    return json_response({"status": "ok"})


async def readyz(request: Request) -> Response:
    state = serving_state(request)
    if state.writer is not None and state.writer.problem is not None:
        return json_response({"status": "other_signals", "message": state.writer.problem}, 503)
    lag = time.monotonic() - state.last_refresh
    log = await asyncio.to_thread(state.log.status)
    state.http.backlog.set(log.backlog_bytes)
    body = {"seconds_since_refresh": round(lag, 3), "backlog_bytes": log.backlog_bytes}
    if lag > max(5 * state.refresh_interval_s, 1.0):
        return json_response({"status": "stale", **body}, 503)
    if not log.ready:  # backlog_full, disk_full, spool_error or broker_unavailable
        return json_response({"status": log.reason, **body}, 503)
    return json_response({"status": "ready", **body})


async def metrics(request: Request) -> Response:
    return Response(generate_latest(serving_state(request).metrics), media_type=CONTENT_TYPE_LATEST)


async def openapi(request: Request) -> Response:
    document: bytes = request.app.state.openapi
    return Response(document, media_type="application/json")


async def docs(request: Request) -> Response:
    return HTMLResponse(DOCS_HTML)
