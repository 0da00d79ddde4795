"""The OpenAPI document lists what each route answers. Found in a newcomer's trial: the read
routes left out their 401/403 (a read token) and 503 (a store outage), `/v1/events` its 503
(the spool full, the broker down) and its body's shape, the batch its 200's shape, and the
batch's 422 spoke of events."""

from __future__ import annotations

from usersignals import SignalRegistry
from usersignals.serving.openapi import openapi_document


def test_every_route_lists_its_answers_and_shapes() -> None:
    paths = openapi_document(SignalRegistry.from_module("usersignals.examples.reference"))["paths"]
    read = paths["/v1/users/{user_id}/signals"]["get"]["responses"]
    batch = paths["/v1/signals/batch"]["post"]["responses"]
    events = paths["/v1/events"]["post"]
    assert {"401", "403", "503"} <= read.keys()
    assert {"401", "403", "503"} <= batch.keys()
    assert {"401", "403"} <= paths["/v1/signals"]["get"]["responses"].keys()
    assert {"401", "403", "503"} <= events["responses"].keys()
    results = batch["200"]["content"]["application/json"]["schema"]["properties"]["results"]
    assert results["items"] == {"$ref": "#/components/schemas/UserSignals"}
    assert "event" not in batch["422"]["description"]
    assert events["requestBody"]["content"]["application/json"]["schema"] != {}


def test_the_ingest_422_is_the_ingest_answer_and_no_internal_note_shows() -> None:
    """Found in a ranking engineer's trial: `POST /v1/events` answered 422 (no event valid)
    with an `IngestResponse`, each rejection and its reason, while the document said
    `ErrorBody` (a generated client failed to parse it); and the `Event` schema's
    description carried a note on the garbage collector, meant for the code's readers."""
    document = openapi_document(SignalRegistry.from_module("usersignals.examples.reference"))
    refused = document["paths"]["/v1/events"]["post"]["responses"]["422"]
    schemas = refused["content"]["application/json"]["schema"]["oneOf"]
    assert {"$ref": "#/components/schemas/IngestResponse"} in schemas
    assert {"$ref": "#/components/schemas/ErrorBody"} in schemas  # a body not the schema's
    assert "gc" not in document["components"]["schemas"]["Event"]["description"]
