"""The Kafka processor: fetch and decode in one thread, apply and commit in another.

The fetch thread assembles and decodes the next micro-batch, and reads its users' records
and its lookup keys ahead (``Engine.read_block_ahead``), while the main thread writes the
current one (a queue of one batch: backpressure). For each batch, in order: bad events to the
dead-letter topic (flushed), the engine's atomic state write, then the offset commit. So a
crash at any point leaves offsets at or behind the state; the re-delivered events are found
in each user's progress and change nothing: an exactly-once effect.

Commits are made by the fetch thread, between its fetches: the consumer serves a synchronous
commit from the thread that polls it, and a commit from another thread waits (measured) until
polling stops. The main thread hands over the offsets of each batch once it is written.

On a partition revocation the fetch thread waits, inside the callback, until every batch in
flight has been written, and commits them, so the next owner starts from committed offsets.

A state store outage does not stop the processor: the batch in hand is written again with
capped backoff until the store is back (:class:`StoreRetry`), nothing is committed meanwhile,
and ``/readyz`` reports 503.

A user deletion travels on the topic like the user's events (a ``{"op": "delete"}`` value on
the user's key, so in the same partition, in order): a batch is split at each deletion, the
events before it are written first, then the deletion, then the rest.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Sequence

from usersignals.closing import SupportsClose
from usersignals.events.decode import EventDecoder
from usersignals.ingest.kafka import KafkaBatch, KafkaSource
from usersignals.ingest.kafka_dead_letter import DeadLetterTopic
from usersignals.processing.engine import Engine
from usersignals.processing.metrics import ProcessorMetrics
from usersignals.processing.pipeline import Block, PipelineRunner, PipelineStep
from usersignals.processing.store_retry import StoreRetry

logger = logging.getLogger(__name__)


#: How long a batch's write may hold the fetch before the lag is asked of the broker.
_HELD_UP_S = 5.0


class KafkaRunner(PipelineRunner):
    """Consumes the topic into the store until stopped; it owns its consumer too."""

    def __init__(
        self,
        engine: Engine,
        decoder: EventDecoder,
        source: KafkaSource,
        dead_letters: DeadLetterTopic,
        metrics: ProcessorMetrics,
        retry: StoreRetry | None = None,
        owns: Sequence[SupportsClose] = (),
    ) -> None:
        self.retry = retry or StoreRetry(metrics=metrics)
        # A topic's offsets can go backwards (made again, a broker that lost its log).
        step = PipelineStep(engine, decoder, dead_letters, self.retry, rewinds=True)
        super().__init__(step, [source, *owns])
        self.engine = engine
        self.source = source
        self.metrics = metrics
        self._queue: queue.Queue[tuple[KafkaBatch, Block] | None] = queue.Queue(maxsize=1)
        self._written: queue.SimpleQueue[dict[tuple[str, int], int]] = queue.SimpleQueue()
        self._in_flight = 0
        self._drained = threading.Condition()
        self._failure: BaseException | None = None
        self._next_positions = 0.0  # when the lag metrics are due again
        self._rewound = RewoundWarning()

    def wait_for_drain(self, timeout_s: float = 30.0) -> None:
        """On the fetch thread: wait until every fetched batch is written, then commit them."""
        with self._drained:
            self._drained.wait_for(lambda: self._in_flight == 0, timeout=timeout_s)
        self._commit_written()

    def _commit_written(self) -> None:
        offsets: dict[tuple[str, int], int] = {}
        while True:
            try:
                offsets.update(self._written.get_nowait())
            except queue.Empty:
                break
        self.source.commit(offsets)

    def run(self, stop: threading.Event) -> None:
        self.retry.stop = stop
        fetcher = threading.Thread(target=self._fetch, args=(stop,), name="kafka-fetch")
        fetcher.start()
        try:
            while True:
                item = self._queue.get()
                if item is None:
                    break
                self._apply(*item)
        except BaseException as exc:
            self._failure = exc
            stop.set()
            with self._drained:  # release a fetch thread waiting for a drain
                self._in_flight = 0
                self._drained.notify_all()
            while self._queue.get() is not None:  # unblock its put, wait for its end
                pass
            raise
        finally:
            stop.set()
            fetcher.join()
            self._rewound.flush()
        if self._failure is not None:
            raise self._failure

    def _fetch(self, stop: threading.Event) -> None:
        try:
            while not stop.is_set() and self._failure is None:
                self._wait_for_room(stop)
                self._commit_written()  # what was written meanwhile, before the next fetch
                if stop.is_set() or self._failure is not None:
                    break
                batch = self.source.next_batch()
                self._observe_positions()
                if not batch.lines and not batch.bad:
                    continue
                block = self.step.decode(batch.lines, batch.positions)
                _keep_keys(block, batch)
                block.segments[0].decoded.bad[:0] = batch.bad  # empty and null values
                block.ahead = self.engine.read_block_ahead(block.events)
                with self._drained:
                    self._in_flight += 1
                self._queue.put((batch, block))
            if self._failure is None:
                self.wait_for_drain()  # graceful stop: the batches in hand, written, committed
        except BaseException as exc:  # surfaced by run() in the main thread
            self._failure = exc
        finally:
            self._queue.put(None)

    def _wait_for_room(self, stop: threading.Event) -> None:
        """Until at most one batch is in flight (the one being written): only then is the
        next one assembled. Assembled while a finished batch still waited for the queue, it
        aged there a whole write, and so did the one after it: three batches in flight, not
        two. bench/ingest.py's freshness step alone at 45,000 events/s: the probes took
        0.4-0.7 s over the first 20 s before, 0.3-0.5 s after (and grew later either way:
        the processor does not keep up at that rate beside the bench on 2 cores)."""
        since = time.monotonic()
        while True:
            with self._drained:
                if self._in_flight <= 1 or stop.is_set() or self._failure is not None:
                    return
                self._drained.wait(timeout=0.1)
            # A write held up (a store outage, a lookup source on hold) holds the fetch here:
            # the lag must still grow with the events that keep arriving, or an alert on it
            # never fires during the outage. Past a few seconds the broker is asked for the
            # watermarks (the cached ones stop moving for some partitions while nothing is
            # consumed). Outside the lock: the write that ends the wait takes it.
            self._observe_positions(ask=time.monotonic() - since > _HELD_UP_S)

    def _observe_positions(self, ask: bool = False) -> None:
        """The lag metrics, once a second (from the fetch thread, the consumer's owner)."""
        if time.monotonic() >= self._next_positions:
            self.metrics.observe_positions(self.source.positions(ask))
            self._next_positions = time.monotonic() + 1.0

    def _apply(self, batch: KafkaBatch, block: Block) -> None:
        started = time.perf_counter()
        report = self.step.apply(block)
        self.metrics.observe_report(report)
        if report.rewound:
            self._rewound.say(report.rewound)
        self._written.put(batch.next_offsets)  # committed by the fetch thread
        self.metrics.observe_batch(block.events, block.bad, time.perf_counter() - started)
        with self._drained:
            self._in_flight -= 1
            self._drained.notify_all()


class RewoundWarning:
    """Says, at most once a minute, how many events were taken though at or below their
    users' progress (``BatchReport.rewound``): the operator must learn that a partition's
    offsets went backwards, and that events of it older than the dedupe horizon may have
    been skipped (they cannot be told from replays). What is left when the runner stops is
    said then."""

    EVERY_S = 60.0

    def __init__(self) -> None:
        self._said_at = -self.EVERY_S
        self._unsaid = 0

    def say(self, count: int) -> None:
        self._unsaid += count
        if time.monotonic() - self._said_at >= self.EVERY_S:
            self.flush()

    def flush(self) -> None:
        if not self._unsaid:
            return
        logger.warning(
            "%d events were at or below their users' progress for their partition, yet their "
            "ids were never met: the partition's offsets went backwards (a topic made again, a "
            "broker that lost its log). They were applied as new events; events of it older "
            "than the ids a user's record keeps (processing.dedupe_horizon_ms) cannot be told "
            "from replays, and may have been skipped",
            self._unsaid,
        )
        self._said_at, self._unsaid = time.monotonic(), 0


def _keep_keys(block: Block, batch: KafkaBatch) -> None:
    """Each of ``block``'s dead letters with its message's key, read in one pass over the
    batch's messages, which are let go of then."""
    faulty = [segment.decoded for segment in block.segments if segment.decoded.bad]
    if faulty:
        keyed = iter(batch.keyed([event for decoded in faulty for event in decoded.bad]))
        for decoded in faulty:
            decoded.bad = [next(keyed) for _ in decoded.bad]
    batch.consumed = []
