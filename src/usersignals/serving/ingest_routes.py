"""The ingest endpoint: events in, each accepted (durably, before the answer) or rejected
with a reason; rejected events go to the dead letters."""

from __future__ import annotations

import asyncio
import time

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from usersignals.errors import ContextError
from usersignals.events.decode import REASON_MALFORMED
from usersignals.events.model import BadEvent, Event
from usersignals.serving.error_handlers import json_response
from usersignals.serving.inputs import MAX_EVENTS_PER_REQUEST, body_of, event_repeated_key
from usersignals.serving.schemas import IngestResponse, Rejected
from usersignals.serving.state import ServingState, serving_state

_raw_list_decoder = msgspec.json.Decoder(list[msgspec.Raw])


async def ingest(request: Request) -> Response:
    state = serving_state(request)
    # A full backlog or disk: 503 before reading anything (off the loop: it may read the
    # store for the processor's progress).
    state.http.backlog.set((await asyncio.to_thread(state.log.check)).backlog_bytes)
    body = await body_of(request, state.front.body_timeout_s)
    raws = _raw_list_decoder.decode(body) if body.lstrip()[:1] == b"[" else [msgspec.Raw(body)]
    if not raws:
        raise ContextError("body", "lists no events")
    if len(raws) > MAX_EVENTS_PER_REQUEST:
        raise ContextError("body", f"at most {MAX_EVENTS_PER_REQUEST} events per request")
    accepted, rejected = await _take(state, raws)
    return json_response(IngestResponse(accepted, rejected), 202 if accepted else 422)


async def _take(state: ServingState, raws: list[msgspec.Raw]) -> tuple[int, list[Rejected]]:
    """Decode each event; the bad ones to the dead letters, the good ones to the log."""
    accepted: list[Event] = []
    rejected: list[Rejected] = []
    bad: list[BadEvent] = []
    now_ms = time.time_ns() // 1_000_000
    for index, raw in enumerate(raws):
        outcome = _decoded(state, bytes(raw), now_ms)
        if isinstance(outcome, Event):
            accepted.append(outcome)
        else:
            rejected.append(Rejected(index, outcome.reason, outcome.detail))
            bad.append(outcome)
            state.http.events_rejected.labels(outcome.reason).inc()
    if bad:
        await asyncio.to_thread(state.dead_letters.write, bad)
    if accepted:
        # Durable (fsynced, or acknowledged by the broker) before the answer: an accepted
        # event is never lost.
        await asyncio.to_thread(state.log.append_events, accepted)
        state.http.events_accepted.inc(len(accepted))
    return len(accepted), rejected


def _decoded(state: ServingState, raw: bytes, now_ms: int) -> Event | BadEvent:
    """One event of the request, or why it is rejected. A key given twice is refused here,
    as a GET refuses a parameter given twice: the decoder keeps the last, so
    ``{"user_id": "a", ..., "user_id": "b"}`` was taken as b's. (The Kafka and file paths
    keep the decoder's rule: this check costs, per event, what the API can pay.)"""
    outcome = state.decoder.decode_one(raw, now_ms)
    if isinstance(outcome, Event):
        path = event_repeated_key(raw, outcome)
        if path is not None:
            detail = f"the key {path or 'at the top'!r} is given more than once"
            return BadEvent(REASON_MALFORMED, detail, raw)
    return outcome
