"""A Spark job's task failures, said as the local runner says them.

A task that fails on one of the package's own errors (an archive file that cannot be read,
a label file's bad column) reaches the driver as pyspark's ``PythonException``, whose message
is the executor's whole traceback; uncaught, the command printed about 240 lines (the JVM's
log echoes the failure three times before the driver's traceback), the one line that
matters among them. :func:`raises_task_errors` turns it into :class:`SparkTaskError` with
that line, which the command prints as it prints the local runner's error; any other
failure passes unchanged, traceback and all. In local mode the executors log into this
process's terminal, so :func:`quiet_task_failures` turns off the three loggers that echo a
failed task (the driver says it; on a cluster they log on the executors, and are kept).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from usersignals.errors import SparkTaskError

P = ParamSpec("P")
R = TypeVar("R")

#: The last line of an executor's traceback when it failed on the package's own error.
_OWN_ERROR = re.compile(r"^usersignals\.errors\.(\w+Error): (.*)$", re.MULTILINE)
#: The loggers that log a failed task again in local mode: the executor's, the scheduler's,
#: and the block manager's (a cached partition that could not be computed).
_TASK_FAILURE_LOGGERS = (
    "org.apache.spark.executor.Executor",
    "org.apache.spark.scheduler.TaskSetManager",
    "org.apache.spark.storage.BlockManager",
)


def own_error(error: BaseException) -> SparkTaskError | None:
    """The package's error a Spark task failed on, from pyspark's exception; else ``None``."""
    from pyspark.errors import PySparkException

    if not isinstance(error, PySparkException):
        return None
    found = _OWN_ERROR.findall(str(error))
    if not found:
        return None
    kind, message = found[-1]  # the outermost: raised from the others
    return SparkTaskError(kind, message)


def raises_task_errors(job: Callable[P, R]) -> Callable[P, R]:
    """``job`` (a Spark job's driver function), raising :class:`SparkTaskError` for a task
    that failed on the package's own error."""

    @functools.wraps(job)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return job(*args, **kwargs)
        except Exception as exc:
            error = own_error(exc)
            if error is None:
                raise
            raise error from exc

    return run


def quiet_task_failures(spark: Any, master: str) -> None:
    """In local mode, the JVM's echoes of a failed task turned off (see the module)."""
    if not master.startswith("local"):
        return
    jvm = spark._jvm  # pyspark's gateway to the driver's JVM: log4j's Configurator
    off = jvm.org.apache.logging.log4j.Level.OFF
    for name in _TASK_FAILURE_LOGGERS:
        jvm.org.apache.logging.log4j.core.config.Configurator.setLevel(name, off)
