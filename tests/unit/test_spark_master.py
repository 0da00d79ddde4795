"""`--spark MASTER` is checked before any work: a master Spark cannot parse ended a backfill or
a training set with 69-103 lines of Java and Python tracebacks (found in a newcomer's
trial); now it is one line naming the option, exit 2 (a ConfigurationError)."""

from __future__ import annotations

import pytest

from usersignals.errors import ConfigurationError
from usersignals.offline.commands import check_spark_master


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
