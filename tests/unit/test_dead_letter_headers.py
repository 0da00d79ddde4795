"""A dead letter's headers stay small whatever the event's detail says.

Found in review: only the value of a dead letter too large to go on whole was cut; the
``detail`` header (for ``signal_failed``, an author's exception text) was not, so one long
enough kept the truncated dead letter over the producer's limit too, and the processor
stopped on that event at every restart.
"""

from __future__ import annotations

from usersignals.events.model import BadEvent, Position
from usersignals.ingest.kafka_dead_letter import DETAIL_HEADER_CHARS, _headers


def test_a_long_detail_is_cut_and_its_length_said() -> None:
    detail = "clicks@1: ValueError: state " + "x" * 1_100_000
    headers = dict(_headers(BadEvent("signal_failed", detail, b"{}", Position("t/0", 5)), None))
    assert headers["detail"] == detail[:DETAIL_HEADER_CHARS].encode()
    assert headers["detail.length"] == str(len(detail)).encode()
    assert headers["source.offset"] == b"5"


def test_a_short_detail_goes_whole() -> None:
    headers = dict(_headers(BadEvent("malformed_json", "not JSON", b"{", None), None))
    assert headers == {"reason": b"malformed_json", "detail": b"not JSON"}
