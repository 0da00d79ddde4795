"""Keeping a worker's view of the store current, and refusing a store it must not read."""

from __future__ import annotations

import asyncio
import logging
import time

from usersignals.errors import SignalsMismatchError, UserSignalsError
from usersignals.serving.state import ServingState
from usersignals.state.keys import SIGNALS_KEY

logger = logging.getLogger(__name__)


async def refresh_forever(state: ServingState) -> None:
    """Catch up with the processor's writes every interval (RocksDB secondary), and watch
    which signals write the store."""
    store = state.reader.store
    failing = False
    while True:
        try:
            if state.reads.offload:  # a store over the network may hang: off the loop
                await asyncio.to_thread(state.reader.refresh)
            else:
                # The embedded store's catch-up holds the GIL throughout (rocksdict), so a
                # thread would not free the loop; it would only add the GIL's hand-offs,
                # each up to the 5 ms switch interval while the loop waits for it back.
                state.reader.refresh()
            if state.writer is not None:
                recorded = await state.reads.run(lambda: store.get_many([SIGNALS_KEY])[0])
                state.writer.observe(recorded)
            state.last_refresh = time.monotonic()
            if failing:
                logger.warning("store refresh works again")
            failing = False
        except UserSignalsError as exc:
            if not failing:  # once per outage, not every interval
                logger.warning("store refresh failed (not ready until it works): %s", exc)
            failing = True
        await asyncio.sleep(state.refresh_interval_s)


def check_writer(state: ServingState) -> None:
    """Refuse to read a store that a processor with other signals now writes (503)."""
    if state.writer is not None and state.writer.problem is not None:
        raise SignalsMismatchError(state.writer.problem)
