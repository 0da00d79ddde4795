"""The core's read kernels alone: ``read_record_body`` per reference signal and for all five.

Method: build (or reuse, in ``--store``) the store bench/serving_handler.py builds — the
reference workload of N events replayed with the five reference signals — and read the
stored records of the most active users once. Then call the core's ``read_record_body``
(the GET route's one core call: the record's states found in its bytes, each read with the
context and written as the JSON body) on those records, with bench/serving.py's query
(window=1d, actions=click,save,closeup, limit=50), first for each signal alone, then for all
five, and for none (the call's fixed cost: the record's framing and the body's bytes).
"Now" is fixed at the workload's newest event, so every run reads the same answers.

Two figures per case:
- wall clock: the best of ``--repeat`` passes over the users, in µs per call (noisy on a
  shared machine: a secondary check);
- instructions per call, counted by callgrind inside ``read_record_body`` only
  (``--toggle-collect``), with ``--callgrind``: the script runs itself under valgrind once
  per case. Instruction counts repeat exactly, so compare these before and after.

    .venv/bin/python bench/read_kernels.py [--store DIR] [--callgrind]

For symbols in ``callgrind_annotate``, build the extension with line tables:
``CARGO_PROFILE_RELEASE_DEBUG=line-tables-only .venv/bin/python -m pip install --quiet
--no-deps --no-build-isolation -e .``; ``--keep DIR`` keeps the callgrind output files.
"""

from __future__ import annotations

import argparse
import atexit
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from serving import QUERY  # bench/serving.py, beside this script
from serving_handler import build_store  # the same store, built the same way
from usersignals._core import BodyQuery, read_record_body
from usersignals.app import open_store_reader
from usersignals.config import Settings, SpoolSettings, StoreSettings
from usersignals.serving.queries import resolve
from usersignals.serving.reader import SignalReader
from usersignals.state.keys import user_key

SIGNALS = (
    "category_interest",
    "taste_embedding",
    "action_counts",
    "recent_engagements",
    "distinct_creators",
)
ALL = "all five"
NONE = "none (fixed cost)"
CASES = (*SIGNALS, ALL, NONE)


def newest_event_ms(root: Path) -> int:
    """The workload's newest event time: the read's "now", the same on every run."""
    events = (root / "workload" / "events.jsonl").read_bytes()
    return max(int(ts) for ts in re.findall(rb'"ts":(\d+)', events))


def prepared(reader: SignalReader, case: str) -> BodyQuery:
    """The core's prepared query for one case, as the GET route prepares it."""
    context = QUERY.split("&", 1)[1]
    if case == NONE:
        # No slot: the call parses the record's framing and writes the body's shell only.
        return BodyQuery([], (None, 0, None, None, None), (None, None, frozenset(), False, None))
    names = ",".join(SIGNALS) if case == ALL else case
    query = resolve(reader.registry, f"names={names}&{context}".encode())
    body_query = reader._body_query(query)
    if body_query is None:
        raise SystemExit(f"{case}: not every signal is native")
    return body_query


def open_reader(root: Path) -> SignalReader:
    settings = Settings(
        store=StoreSettings(path=str(root / "store")), spool=SpoolSettings(path=str(root / "sp"))
    )
    return open_store_reader(settings)


def run_case(root: Path, users: list[str], case: str, passes: int) -> float:
    """Best µs per call over ``passes`` passes of every user (each call's body checked)."""
    reader = open_reader(root)
    records = [raw or None for raw in reader.store.get_many([user_key(u) for u in users])]
    names = [json.dumps(u).encode() for u in users]
    query, plans, now_ms = prepared(reader, case), reader._plans, newest_event_ms(root)
    for name, record in zip(names, records, strict=True):
        if not isinstance(read_record_body(plans, query, name, record, now_ms), bytes):
            raise SystemExit(f"{case}: the core did not write a body")
    best = float("inf")
    for _ in range(passes):
        started = time.perf_counter()
        for name, record in zip(names, records, strict=True):
            read_record_body(plans, query, name, record, now_ms)
        best = min(best, time.perf_counter() - started)
    return best / len(users) * 1e6


def instructions(args: argparse.Namespace, root: Path, case: str, keep: Path) -> float:
    """Instructions per ``read_record_body`` call, under callgrind (one pass of the users)."""
    out = keep / f"callgrind.{SIGNALS.index(case) if case in SIGNALS else case.split()[0]}"
    command = [
        "valgrind",
        "--tool=callgrind",
        f"--callgrind-out-file={out}",
        "--toggle-collect=*read_record_body*",
        sys.executable,
        __file__,
        "--store",
        str(root),
        "--users",
        str(args.users),
        "--case",
        case,
        "--repeat",
        "1",
    ]
    subprocess.run(command, check=True, capture_output=True)
    summary = re.search(rb"^(?:summary|totals): (\d+)", out.read_bytes(), re.MULTILINE)
    if summary is None:
        raise SystemExit(f"no instruction total in {out}")
    # The check pass and the timed pass: two calls per user.
    return int(summary[1]) / (2 * args.users)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--users", type=int, default=200, help="the most active users read")
    parser.add_argument("--repeat", type=int, default=30, help="timed passes (best kept)")
    parser.add_argument("--store", type=Path, help="where the store is kept (reused)")
    parser.add_argument("--case", choices=CASES, help="only this case (no report)")
    parser.add_argument("--only", choices=CASES, action="append", help="report these cases")
    parser.add_argument("--callgrind", action="store_true", help="count instructions too")
    parser.add_argument("--keep", type=Path, help="keep the callgrind files here")
    args = parser.parse_args()
    root = args.store or Path(tempfile.mkdtemp(prefix="usersignals-handler-"))
    if args.store is None:  # made here: gone when this run ends (a given one is reused)
        atexit.register(shutil.rmtree, root, ignore_errors=True)
    root.mkdir(parents=True, exist_ok=True)
    users = build_store(root, args.events)[: args.users]
    if args.case is not None:
        run_case(root, users, args.case, args.repeat)
        return
    print(f"workload: {args.events:,} events in {root}; the {len(users):,} most active users")
    print(f"context: {QUERY.split('&', 1)[1]}; now = the newest event")
    keep = args.keep or Path(tempfile.mkdtemp(prefix="usersignals-callgrind-"))
    if args.keep is None:
        atexit.register(shutil.rmtree, keep, ignore_errors=True)
    keep.mkdir(parents=True, exist_ok=True)
    print(f"{'case':<20} {'us/call (best of ' + str(args.repeat) + ')':>24} {'instr/call':>12}")
    for case in args.only or CASES:
        micros = run_case(root, users, case, args.repeat)
        counted = f"{instructions(args, root, case, keep):>12,.0f}" if args.callgrind else ""
        print(f"{case:<20} {micros:>24.2f} {counted}")


if __name__ == "__main__":
    main()
