"""The feature log samples its stated share of answers, whichever path answers them."""

from __future__ import annotations

from pathlib import Path

import httpx
from accepted_helpers import environment, start_server, stop

from usersignals.serving.feature_log import read_feature_log

UNIT_TESTS = Path(__file__).resolve().parent.parent / "unit"
REQUESTS = 400


def test_a_request_for_a_python_signal_is_sampled_at_the_stated_rate(tmp_path: Path) -> None:
    """Found by the consistency trial: a request the fast path hands over (a signal written
    in Python is read by the full stack) was drawn twice, by the fast path and again by the
    route, so it was logged at 1-(1-r)^2: about 0.75 of the answers at a rate of 0.5."""
    module = tmp_path / "python_signals.py"
    module.write_text(
        f"import sys\nsys.path.insert(0, {str(UNIT_TESTS)!r})\n"
        "from test_signal_failures import signals\nSIGNALS = signals('never')\n"
    )
    log = tmp_path / "feature-log"
    env = environment(
        tmp_path,
        USERSIGNALS_SIGNALS=str(module),
        USERSIGNALS_SERVING__FEATURE_LOG_PATH=str(log),
        USERSIGNALS_SERVING__FEATURE_LOG_RATE="0.5",
    )
    url, server = start_server(env)
    try:
        with httpx.Client(base_url=url, timeout=10) as client:
            for _ in range(REQUESTS):
                assert client.get("/v1/users/u1/signals").status_code == 200
    finally:
        assert stop(server) == 0
    logged = len(read_feature_log(log))
    # 200 expected, with a standard deviation of 10: 250 is five of them away (the double
    # draw logged about 300).
    assert 150 < logged < 250, logged
