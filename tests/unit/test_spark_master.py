"""`--spark MASTER` is checked before any work: a master Spark cannot parse ended a backfill or
a training set with 69-103 lines of Java and Python tracebacks (found in a newcomer's
trial); now it is one line naming the option, exit 2 (a ConfigurationError)."""

from __future__ import annotations

import socket
import time

import pytest

from usersignals.errors import ConfigurationError
from usersignals.offline.commands import check_spark_master, check_spark_master_answers


@pytest.mark.parametrize(
    "master",
    ["local", "local[2]", "local[*]", "local[4,2]", "local[*,3]", "local-cluster[2,1,1024]",
     "spark://10.0.0.1:7077", "spark://a:7077,b:7077", "yarn", "k8s://https://host:6443"],
)  # fmt: skip
def test_the_masters_spark_takes_pass(master: str) -> None:
    check_spark_master(master)


@pytest.mark.parametrize("master", ["foo", "", "local[x]", "local[]", "spark://", "spark:/h:1"])
def test_a_master_spark_cannot_parse_is_one_line_naming_the_option(master: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        check_spark_master(master)
    message = str(caught.value)
    assert message.startswith(f"--spark {master!r} is not a Spark master: ")
    assert "\n" not in message


def test_a_standalone_master_nobody_answers_at_is_one_line_before_any_work() -> None:
    """`--spark spark://HOST:PORT` where no master listens: Spark's driver retried for about
    70 s, printing its connection errors, before the job failed (found in a newcomer's
    trial). The master's port is tried first: one line naming it, at once."""
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        port = closed.getsockname()[1]
        master = f"spark://127.0.0.1:{port}"
        started = time.monotonic()
        with pytest.raises(ConfigurationError) as caught:
            check_spark_master_answers(master)
    assert time.monotonic() - started < 5
    message = str(caught.value)
    assert message.startswith(f"--spark {master!r}: no Spark master answers at 127.0.0.1:{port}")
    assert "\n" not in message


def test_a_standalone_master_answering_at_one_of_its_hosts_passes() -> None:
    with socket.socket() as closed, socket.socket() as listening:
        closed.bind(("127.0.0.1", 0))
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        hosts = [f"127.0.0.1:{s.getsockname()[1]}" for s in (closed, listening)]
        check_spark_master_answers(f"spark://{','.join(hosts)}")
    check_spark_master_answers("local[2]")  # nothing to reach
