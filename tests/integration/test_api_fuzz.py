"""Fuzzing the API from its own OpenAPI document (schemathesis): no input gets a 5xx."""

from __future__ import annotations

from typing import Any

import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from service_helpers import Service

ALLOWED_TYPES = ("application/json", "text/html", "text/plain")


def test_no_input_gets_a_server_error(service: Service) -> None:
    schema = schemathesis.openapi.from_url(f"{service.base_url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 8
    checked: list[str] = []
    # Inputs that fit the document, and inputs built to violate it.
    runs = [
        (op, mode)
        for op in operations
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    ]
    for operation, mode in runs:

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
        def no_server_error(case: Any) -> None:
            response = case.call(timeout=5)
            assert response.status_code < 500, (case.method, case.path, response.text[:300])
            content_type = response.headers.get("content-type") or [""]
            assert content_type[0].startswith(ALLOWED_TYPES)

        try:
            no_server_error()
        except Unsatisfiable:
            # Nothing to violate: an operation with no parameters or body has no negatives.
            assert mode is GenerationMode.NEGATIVE
            continue
        checked.append(f"{mode.value} {operation.method.upper()} {operation.path}")
    assert "positive GET /v1/users/{user_id}/signals" in checked
    assert "negative GET /v1/users/{user_id}/signals" in checked
    assert "negative POST /v1/signals/batch" in checked
    assert "positive POST /v1/events" in checked
