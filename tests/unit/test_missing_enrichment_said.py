"""Events applied with no record of their lookup key are counted where an operator looks: the
`run` stop line (as `replay`'s summary says them), the processor's `/metrics`, and the
lookup source's keys it held no record for. Found in a newcomer's trial: the README's Kafka
steps applied 17 % of a million events with their enriched fields missing (their items were
not in the table loaded), and nothing the processor said or exported showed it."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest

from usersignals.cli_run import _stopped
from usersignals.enrich import Materializer, TableSource
from usersignals.enrich.metrics import EnrichmentMetrics
from usersignals.enrich.sources import encode_table_record
from usersignals.processing.batch import BatchReport
from usersignals.processing.metrics import ProcessorMetrics
from usersignals.processing.pipeline import PipelineStats
from usersignals.state.rocks import RocksStore


def test_the_run_stop_line_says_the_events_with_no_enrichment_record() -> None:
    stats = PipelineStats(batches=2, report=BatchReport(events=100))
    assert "enrichment" not in _stopped(stats, kafka=True)
    stats.report.missing_enrichment = {"items": 17, "boards": 0, "creators": 2}
    for kafka in (True, False):
        said = _stopped(stats, kafka=kafka)
        assert "19 events with no enrichment record (items: 17, creators: 2)" in said, said


def test_the_processor_counts_them_per_source() -> None:
    metrics = ProcessorMetrics()
    metrics.observe_report(BatchReport(missing_enrichment={"items": 7}))
    metrics.observe_report(BatchReport(missing_enrichment={"items": 3}))
    text = generate_latest(metrics.registry).decode()
    assert 'usersignals_events_missing_enrichment_total{source="items"} 10.0' in text


def test_a_lookup_source_counts_the_keys_it_holds_no_record_for(tmp_path: Path) -> None:
    store = RocksStore(tmp_path / "store")
    try:
        table = store.table("items")
        table.write({b"i1": encode_table_record({"category": "c1"})})
        registry = CollectorRegistry()
        materializer = Materializer(
            {"items": TableSource("items", table)}, metrics=EnrichmentMetrics(registry)
        )
        materializer.lookup("items", ["i1", "i2", "i3"])
        materializer.lookup("items", ["i2"])  # the cache remembers the miss: not fetched again
        sample = registry.get_sample_value
        assert sample("usersignals_lookup_keys_missing_total", {"source": "items"}) == 2
        assert sample("usersignals_lookup_keys_fetched_total", {"source": "items"}) == 3
    finally:
        store.close()


def test_each_sources_series_is_exported_at_zero_before_its_first_miss(tmp_path: Path) -> None:
    """A series that appears only at the first miss leaves an alert on its rate with nothing
    to compute from until then (and a dashboard with no line): each source the signals look
    up is exported at 0 from the start."""
    metrics = ProcessorMetrics()
    metrics.name_sources(["items", "creators"])
    sample = metrics.registry.get_sample_value
    for source in ("items", "creators"):
        assert sample("usersignals_events_missing_enrichment_total", {"source": source}) == 0
    store = RocksStore(tmp_path / "store")
    try:
        registry = CollectorRegistry()
        Materializer(
            {"items": TableSource("items", store.table("items"))},
            metrics=EnrichmentMetrics(registry),
        )
        for name in ("requested", "fetched", "missing"):
            value = registry.get_sample_value(
                f"usersignals_lookup_keys_{name}_total", {"source": "items"}
            )
            assert value == 0, name
        assert (
            registry.get_sample_value("usersignals_lookup_cache_hits_total", {"source": "items"})
            == 0
        )
    finally:
        store.close()


def test_run_names_its_signals_lookup_sources(tmp_path: Path) -> None:
    import threading

    from usersignals.cli_run import _processor_once_the_store_answers
    from usersignals.config import Settings

    overrides = {"signals": "usersignals.examples.reference", "store": {"path": str(tmp_path)}}
    settings = Settings.load(environ={}, overrides=overrides)
    built = _processor_once_the_store_answers(settings, threading.Event(), None)
    assert built is not None
    processor, metrics = built
    try:
        sample = metrics.registry.get_sample_value
        assert sample("usersignals_events_missing_enrichment_total", {"source": "items"}) == 0
        assert sample("usersignals_lookup_keys_missing_total", {"source": "items"}) == 0
    finally:
        processor.close()


def test_the_spool_stop_line_counts_only_the_events_applied() -> None:
    """Found by an author's trial: four events posted, one a repeat of another's event id,
    and `run` said "4 events applied" beside "1 repeated event ids dropped"."""
    stats = PipelineStats(lines=6, report=BatchReport(events=6, duplicates=2, repeats=1))
    said = _stopped(stats, kafka=False)
    assert "6 lines, 3 events applied (2 already applied)" in said, said
    assert "1 repeated event ids dropped" in said
