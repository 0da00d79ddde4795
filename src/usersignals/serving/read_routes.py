"""The read endpoints: one user's signals, a batch of users, the signal definitions.

Plain functions of the request over the worker's :class:`ServingState`; whatever they raise,
the app's exception handlers answer.
"""

from __future__ import annotations

import asyncio
import json
import time
from functools import partial

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from usersignals.aggregations.context import ReadContext
from usersignals.durations import iso_utc
from usersignals.errors import ContextError
from usersignals.serving.error_handlers import error_response, json_response
from usersignals.serving.fast_read import SAMPLED
from usersignals.serving.guards import check_reads, distinct_names
from usersignals.serving.inputs import body_of, check_unrepeated_keys, check_users, user_id_of
from usersignals.serving.reader import ReadPlan
from usersignals.serving.refresh import check_writer
from usersignals.serving.schemas import BatchRequest, ContextValue, context_strings
from usersignals.serving.state import serving_state
from usersignals.signals.definition import Signal
from usersignals.signals.registry import SignalRegistry

_batch_decoder = msgspec.json.Decoder(BatchRequest)
_encode = msgspec.json.Encoder().encode
#: Users a batch reads and encodes between two turns of the event loop.
BATCH_SLICE_USERS = 50


async def user_signals(request: Request) -> Response:
    state = serving_state(request)
    user_id = user_id_of(request, state.max_user_id_chars)
    query = state.queries.get(request.scope["query_string"])
    check_writer(state)
    now_ms = time.time_ns() // 1_000_000
    reader, log = state.reader, state.feature_log
    # Drawn once: by the fast path, which may hand the request over whatever it drew, or
    # here when the fast path did not look at it.
    sampled = False
    if log is not None:
        drawn: bool | None = request.scope.get(SAMPLED)
        sampled = log.sampled() if drawn is None else drawn
    if not sampled:  # the logged answer needs the objects
        body = await state.reads.run(lambda: reader.read_body(user_id, query, now_ms))
        if body is not None:
            return Response(body, media_type="application/json")
    context = query.at(now_ms)
    result = await state.reads.run(lambda: reader.read(user_id, query.names, context))
    if log is not None and sampled:
        log.record(query.params, now_ms, result)
    return json_response(result)


async def batch(request: Request) -> Response:
    state = serving_state(request)
    raw = await body_of(request, state.front.body_timeout_s)
    body = _batch_request(raw)
    check_unrepeated_keys(raw)
    check_users(body.users, state.max_user_id_chars)
    plan, labels = batch_plan(state.registry, body)
    check_writer(state)
    reader = state.reader
    # Labelled once: a cut-over between two slices must not rename a signal half-way
    # through the answer.
    read = partial(reader.read_each, plan=plan, labels=labels)
    answers: dict[str, bytes] = {}  # a user repeated in the request is read once
    unique = list(dict.fromkeys(body.users))
    async with state.batch_slots:
        for start in range(0, len(unique), BATCH_SLICE_USERS):
            users = unique[start : start + BATCH_SLICE_USERS]
            results = await state.reads.run(partial(read, users))
            answers.update(zip(users, map(_encode, results), strict=True))
            # The event loop's turn between slices: a batch of 1,000 users was 0.6 s of CPU
            # in one piece, and 40 of them kept /healthz waiting 23 s.
            await asyncio.sleep(0)
    content = b'{"results":[' + b",".join(answers[user] for user in body.users) + b"]}"
    return Response(content, media_type="application/json")


def _batch_request(raw: bytes) -> BatchRequest:
    """The body decoded. A context value of a wrong type is named by its parameter: the
    decoder's own message stops at ``$.context[...]``, naming no key."""
    try:
        return _batch_decoder.decode(raw)
    except msgspec.ValidationError:
        _refuse_a_wrong_context_value(raw)
        raise


def _refuse_a_wrong_context_value(raw: bytes) -> None:
    """A :class:`ContextError` for the first context value that is no ``ContextValue``."""
    try:
        body = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return
    if not isinstance(body, dict):
        return
    contexts = [("context", body.get("context"))]
    if isinstance(body.get("contexts"), dict):
        contexts += [(f"contexts.{name}", c) for name, c in body["contexts"].items()]
    for prefix, context in contexts:
        for key, value in context.items() if isinstance(context, dict) else ():
            if value is None:
                raise ContextError(f"{prefix}.{key}", "is null: give a value or leave it out")
            if isinstance(value, list) and not all(isinstance(v, str) for v in value):
                raise ContextError(f"{prefix}.{key}", "a list holds texts only")
            if not isinstance(value, bool | int | float | str | list):
                raise ContextError(
                    f"{prefix}.{key}", "must be a text, a number, a boolean or a list of texts"
                )


def batch_plan(registry: SignalRegistry, body: BatchRequest) -> tuple[ReadPlan, list[str]]:
    """Each requested signal with its context (the shared one, overridden per signal), and
    the keys they are answered under."""
    if body.signals == []:
        raise ContextError("signals", "is empty: name at least one signal, or leave it out for all")
    names = distinct_names(body.signals, "signals") if body.signals else None
    signals = [registry.get(name) for name in names] if names else list(registry)
    check_reads(len(body.users), len(signals))
    labels = registry.labels(names, signals)
    own = _own_contexts(registry, signals, labels, body.contexts)
    now_ms = time.time_ns() // 1_000_000
    shared = context_strings(body.context)
    plan = [
        (signal, ReadContext.parse({**shared, **context_strings(context)}, now_ms))
        for signal, context in zip(signals, own, strict=True)
    ]
    return plan, labels


def _own_contexts(
    registry: SignalRegistry,
    signals: list[Signal],
    labels: list[str],
    contexts: dict[str, dict[str, ContextValue]],
) -> list[dict[str, ContextValue]]:
    """Each requested signal's own context, from ``contexts``. A signal's context is keyed
    as its answer is (a shadow version by its name@version) or by its other name (its
    name@version always, its name while served by default): a client that pins versions
    keys them as it names them, whichever version is served by default. The other name
    counts only when the request is not answered under it too: a signal named twice (as
    ``name`` and ``name@version``) gets under each key its own context, not both."""
    answered = set(labels)
    used: set[str] = set()
    out: list[dict[str, ContextValue]] = []
    for signal, label in zip(signals, labels, strict=True):
        others = (registry.label(signal), signal.key)
        keys = dict.fromkeys([label, *(k for k in others if k not in answered)])
        given = [key for key in keys if key in contexts]
        if len(given) > 1:
            raise ContextError("contexts", f"gives {signal.key}'s context twice, by two names")
        used.update(given)
        out.append(contexts[given[0]] if given else {})
    unknown = set(contexts) - used
    for key in sorted(unknown):
        registry.get(key)  # a name no signal has: the 404 `names` gets, the known listed
    if unknown:
        raise ContextError("contexts", f"names signals not requested: {sorted(unknown)}")
    return out


async def no_read_here(request: Request) -> Response:
    """A GET under ``/v1/users/`` that the read route did not take (``.../signals/``, the
    user's path alone). The admin route ``DELETE /v1/users/{user_id}`` takes every such
    path, so without this one such a read got its 405, which sent the reader looking for
    another method."""
    return error_response(
        404, "not_found", f"no route GET {request.url.path}: a user's signals are "
        "GET /v1/users/{user_id}/signals (no trailing slash)",
    )  # fmt: skip


async def list_signals(request: Request) -> Response:
    document = signals_document(serving_state(request).registry)
    return Response(document, media_type="application/json")


def signals_document(registry: SignalRegistry) -> bytes:
    """``GET /v1/signals``: every declared version's compiled definition (as the module
    declares it: ``shadow`` is the module's flag), the version each name serves by default
    now (after a cut-over, the one cut over to), the versions a cut-over replaced that are in
    their grace period (still answered when named), with until when, and those whose grace
    period is over (naming one answers 410), with when."""

    def times(versions: dict[str, int]) -> dict[str, str]:
        return {key: iso_utc(at, "seconds") for key, at in sorted(versions.items())}

    served = {name: signal.key for name, signal in registry.served.items()}
    compiled = json.loads(registry.to_json())
    document = {
        **compiled,
        "served": served,
        "retiring": times(registry.retiring),
        "retired": times(registry.retired),
    }
    return json.dumps(document, indent=2, sort_keys=True).encode()
