"""The processor's Prometheus metrics, as a scrape reads them."""

from __future__ import annotations

from usersignals.processing.metrics import ProcessorMetrics


def series(metrics: ProcessorMetrics, name: str) -> dict[str, float]:
    return {
        sample.labels["partition"]: sample.value
        for family in metrics.registry.collect()
        for sample in family.samples
        if sample.name == name
    }


def test_a_partition_revoked_from_the_processor_leaves_its_lag_and_position() -> None:
    """Found by the operator's trial: after a rebalance each processor kept exporting the
    lag and position of partitions it no longer held, so a sum over the processors counted
    those partitions twice (one of them at a stale value)."""
    metrics = ProcessorMetrics()
    metrics.observe_positions({"t/0": (5, 10), "t/1": (3, 3), "t/2": (-1, -1)})
    assert series(metrics, "usersignals_consumer_lag") == {"t/0": 5, "t/1": 0}
    metrics.observe_positions({"t/1": (4, 9)})  # t/0 and t/2 revoked
    assert series(metrics, "usersignals_consumer_lag") == {"t/1": 5}
    assert series(metrics, "usersignals_consumer_position") == {"t/1": 4}
    assert metrics.registry.get_sample_value("usersignals_consumer_assigned_partitions") == 1
