"""Where `sipflow analyze` spends its time: the per-stage split, measured in one process.

    .venv/bin/python benchmarks/profile_stages.py [FILE] [--repeat N]

Stages, each timed on the output of the one before it (materialised in a list, so one
stage's cost does not hide in another's generator):

1. import      ``import sipflow.api`` (numpy included; pandas is never imported)
2. ingest      :func:`sipflow.ingest.capture.read_capture`: records -> SIP Datagrams
3. parse       :func:`sipflow.sip.message.parse_message` on each Datagram (as
               :mod:`sipflow.engine.local` does it, stream framing included)
4. reorder     the per-source reorder buffer (``engine.local._reorder``)
5. merge       ``merge_timeline`` + ``drop_duplicates`` (``engine.merge``)
6. calls       :class:`sipflow.correlate.calls.CallBuilder` ``feed`` for each message + ``finish``
7. whole       ``sipflow.analyze([FILE], Options(keep_messages=False, keep_records=False))``
               + ``to_dict()``, as the CLI runs it (all of the above, streamed)

The best of ``--repeat`` runs is printed per stage (CPU time of this process; wall time
beside it), with the cost per SIP message; the parser's memo caches are emptied before
each run. The cyclic garbage collector is paused, as
:func:`sipflow.api.analyze` pauses it. Peak RSS of the process is printed at the end.
"""

from __future__ import annotations

import argparse
import gc
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEFAULT = REPO / "benchmarks" / "out" / "load.pcap"


def _cold() -> None:
    """Empty the parser's memo caches, so every run parses as a fresh process would."""
    from sipflow.sip import headers, message, transaction, uri

    for mod in (headers, message, transaction, uri):
        for name in dir(mod):
            value = getattr(mod, name)
            if hasattr(value, "cache_clear"):
                value.cache_clear()
            elif name in ("_LINES", "_NAMES", "_CANONICAL", "_SENT_BY", "_STARTS"):
                value.clear()


def _timed(fn: Callable[[], Any], repeat: int) -> tuple[float, float, Any]:
    """(best CPU s, wall s of that run, result of the last run); caches cold each run."""
    best = (float("inf"), 0.0)
    result: Any = None
    for _ in range(repeat):
        result = None
        _cold()
        gc.collect()
        c0, w0 = time.process_time(), time.perf_counter()
        result = fn()
        c1, w1 = time.process_time(), time.perf_counter()
        best = min(best, (c1 - c0, w1 - w0))
    return best[0], best[1], result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("file", nargs="?", default=str(DEFAULT))
    ap.add_argument("--repeat", type=int, default=3, help="runs per stage, best kept")
    args = ap.parse_args()
    if not Path(args.file).is_file():
        print(f"{args.file}: no such file (make it with benchmarks/gen_load.py)", file=sys.stderr)
        return 2
    sys.path.insert(0, str(REPO))

    c0, w0 = time.process_time(), time.perf_counter()
    import sipflow.api as api  # the import is what is measured
    from sipflow.correlate.calls import CallBuilder
    from sipflow.engine import local
    from sipflow.engine.merge import drop_duplicates, merge_timeline
    from sipflow.ingest.capture import read_capture
    from sipflow.ingest.types import SourceStats

    rows: list[tuple[str, float, float]] = [
        ("import", time.process_time() - c0, time.perf_counter() - w0)
    ]
    gc.disable()  # as sipflow.api.analyze does (sipflow.gcpause)
    path = args.file

    def ingest() -> list[Any]:
        return list(read_capture(path, 0, SourceStats(path=path), []))

    cpu, wall, dgs = _timed(ingest, args.repeat)
    rows.append(("ingest (read_capture)", cpu, wall))

    def parse() -> list[Any]:
        # engine.local's own loop over a materialised list of Datagrams
        result = local.SourceResult(SourceStats(path=path))
        real = local.read_capture
        local.read_capture = lambda *a, **k: iter(dgs)  # type: ignore[assignment]
        try:
            return list(local._parse_all(path, 0, result))
        finally:
            local.read_capture = real

    cpu, wall, msgs = _timed(parse, args.repeat)
    rows.append(("parse (parse_message)", cpu, wall))
    cpu, wall, ordered = _timed(lambda: list(local._reorder(iter(msgs))), args.repeat)
    rows.append(("reorder", cpu, wall))

    def merge() -> list[Any]:
        dropped: list[Any] = []
        return list(drop_duplicates(merge_timeline([iter(ordered)]), dropped.append))

    cpu, wall, merged = _timed(merge, args.repeat)
    rows.append(("merge + dedupe", cpu, wall))

    def calls() -> int:
        builder = CallBuilder()
        n = 0
        for msg in merged:
            n += len(builder.feed(msg).calls)
        return n + len(builder.finish().calls)

    cpu, wall, n_calls = _timed(calls, args.repeat)
    rows.append(("calls (CallBuilder.feed)", cpu, wall))

    def whole() -> dict[str, Any]:
        opts = api.Options(keep_messages=False, keep_records=False)
        return api.analyze([path], opts).to_dict()

    cpu, wall, doc = _timed(whole, args.repeat)
    rows.append(("whole analyze + to_dict", cpu, wall))

    n = len(merged)
    print(f"{path}: {n} SIP messages, {n_calls} calls, {doc['sources'][0]['frames']} frames")
    print(f"{'stage':<28}{'CPU s':>8}{'wall s':>8}{'µs/msg':>9}")
    for name, cpu, wall in rows:
        per = f"{cpu / n * 1e6:9.1f}" if n and name != "import" else f"{'':>9}"
        print(f"{name:<28}{cpu:8.3f}{wall:8.3f}{per}")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"peak RSS of this process (all stages, lists kept): {rss / 1024:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
