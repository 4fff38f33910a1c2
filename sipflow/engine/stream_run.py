"""The streaming analysis run (``analyze --stream``): read, build calls, hand finished legs
and idle RTP to the :class:`~sipflow.engine.stream.Finalizer`, on one core or split by
Call-ID over several.

How this works: shard 0 runs in this process and keeps every per-packet fact (counts,
ingest findings, RTP, TLS), as in a split whole-capture run (:mod:`sipflow.engine.shard`).
Each other shard runs in a worker process over every packet, builds the calls of its
Call-IDs, and every :data:`STREAM_CHECK_NS` of capture time sends a :class:`Report`
through a pipe: the time it has reached, the legs it finished since its last report,
the first-message times of its calls still open, and its findings. The Finalizer runs
here on all shards' legs (leg correlation crosses shards: a B2BUA's legs have different
Call-IDs) with the earliest time any shard has reached as "now" and the open calls of all
of them, so a story is written only once no shard can still add a leg to it. This process
waits for a worker more than :data:`MAX_LAG_NS` behind it and leaves the reports of one
further ahead in its pipe (the worker waits when the pipe is full), so what is held here
stays bounded by the window plus the lag, whatever the shards' speeds.
A worker that dies is reported (``engine.shard_failed``, an error: its Call-IDs' calls
are missing) and counted in :attr:`StreamResult.lost_shards`; the others go on.
"""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

from sipflow.engine.shard import Shard, SourcePart, Tick, plan
from sipflow.engine.stream import Finalizer, RowSink, StreamOptions
from sipflow.findings import Finding, Severity
from sipflow.sip.message import SipMessage

if TYPE_CHECKING:
    from sipflow.api import Built, Options
    from sipflow.engine.local import SourceResult

STREAM_CHECK_NS = 5_000_000_000
"""How often (capture time) idle RTP is released, findings are written out and worker
shards report."""
MAX_LAG_NS = 2 * STREAM_CHECK_NS
"""This process waits for a worker shard that is further behind in capture time."""
_DONE = 2**63 - 1


@dataclass
class StreamResult:
    """What a streaming run leaves once the rows are written: the document's other parts
    (``tail``: sources, stats, activity, channel events, TLS sessions) and counts."""

    tail: dict[str, Any]
    calls: int
    streams: int
    unreadable: list[str]
    sources: int
    waiting_peak: int
    """Most finished legs held at once, waiting for legs or media that could join them."""
    shards: int = 1
    """Processes the run was split over (by Call-ID)."""
    lost_shards: int = 0
    """Worker shards that died: their calls are missing (an ``engine.shard_failed`` finding)."""


@dataclass
class Report:
    """What a worker shard sends every STREAM_CHECK_NS, and once more at the end (``final``)."""

    at: int
    """Capture time the shard has reached (its every message before this is built)."""
    legs: list[Any]
    opens: list[int]
    findings: list[Finding]
    final: bool = False
    counts: Any = None
    activity: Any = None
    sources: list[SourcePart] = field(default_factory=list)


# -- this process (shard 0, or the only one) ------------------------------------------


def run(
    paths: list[str], sink: RowSink, opts: Options, sopts: StreamOptions, shards: int = 1
) -> StreamResult:
    """Stream the analysis of ``paths`` to ``sink``, split over ``shards`` processes."""
    from sipflow import api
    from sipflow.correlate.calls import CallBuilder
    from sipflow.engine.progress import ProgressTracker
    from sipflow.trace import ActivitySummary

    workers = _Workers.start(paths, opts, sopts, shards) if shards > 1 else None
    first = plan(shards)[0] if workers is not None else None
    tracker = ProgressTracker.start(paths, opts.progress)
    results, per_source = api._local_sources(paths, opts, first)
    if tracker is not None:
        per_source = tracker.attach(results, per_source)
    starts = api._starts(results) or [None] * len(results)
    clocks = [_MediaClock(r, start) for r, start in zip(results, starts, strict=True)]
    per_source = [c.follow(s) for c, s in zip(clocks, per_source, strict=True)]

    def with_rtp() -> set[int]:
        return {i for i, r in enumerate(results) if r.rtp.counts["rtp"]}

    fin = Finalizer(sink, sopts, with_rtp, _no_srtp(paths))
    built = api.Built(api._Counts(), [], ActivitySummary(keep_records=False), [], [])
    builder = CallBuilder()
    idle = int(sopts.window_s * 1e9)
    check: int | None = None
    for msg in api._timeline(per_source, results, starts):
        api._step(builder, built, msg, opts)
        if built.calls:
            fin.add_legs(built.calls)
            built.calls = []
        if check is None or msg.ts >= check:
            check = msg.ts + STREAM_CHECK_NS
            untils = [c.until for c in clocks]  # RTP fed up to here (a chunk behind SIP)
            media = None if None in untils else min(t for t in untils if t is not None)
            if media is not None:
                for r in results:
                    fin.add_streams(r.rtp.release(min(media, msg.ts) - idle))
            opens = builder.open_starts()
            now = msg.ts
            if workers is not None:
                now = min(now, workers.poll(fin, sink, now))
                opens += workers.opens()
            _drain_findings(results, built, sink)
            if fin.due(msg.ts):
                fin.flush(now, opens, media)
    api._take(builder.finish(), built.calls, built.activity, built.findings, False)
    fin.add_legs(built.calls)
    built.calls = []
    lost = workers.finish(fin, sink, results, built) if workers is not None else 0
    for r in results:
        fin.add_streams(r.rtp.finish())
    fin.flush(None, [])
    _drain_findings(results, built, sink)
    sink.findings([f.to_dict() for f in api._keylog_findings(results)])
    if tracker is not None:
        tracker.finish()
    tail = _tail(results, built, fin.retransmissions)
    unreadable = [r.stats.path for r in results if "unreadable" in r.stats.skipped]
    return StreamResult(
        tail,
        fin.calls_out,
        fin.streams_out,
        unreadable,
        len(paths),
        fin.waiting_peak,
        shards if workers is not None else 1,
        lost,
    )


NO_SECOND_READ = "a streaming run (--stream) reads the capture once; --no-stream decrypts"


def _no_srtp(paths: list[str]) -> Any:
    """The SRTP stage of a streaming run: decryption needs a second read of the capture
    (sipflow.rtp.decrypt), so SDES-keyed streams are marked not decrypted, with the reason
    and a ``srtp.not_decrypted`` finding, exactly as when a source cannot be read again."""
    from sipflow.errors import InputError
    from sipflow.rtp.decrypt import Srtp

    def refuse(_path: str, _source: int, _sink: Any) -> None:
        raise InputError(NO_SECOND_READ)

    return Srtp(paths, refuse)


class _MediaClock:
    """How far one source's RTP has reached its collector: a chunk's media is fed after the
    chunk's SIP messages (sipflow.ingest.capture), so when chunk k+1 starts, media is
    complete up to the last packet of chunk k; before its first chunk, up to just before
    its first record (``start``, when known: a rotated file not opened yet holds nothing
    earlier); when the source ends, all of it."""

    def __init__(self, result: SourceResult, start: int | None = None) -> None:
        from sipflow.engine.local import REORDER_WINDOW_NS

        self.until: int | None = None if start is None else start - REORDER_WINDOW_NS
        self._stats = result.stats
        self._last: int | None = None
        self._inner = result.on_chunk
        result.on_chunk = self._on_chunk

    def _on_chunk(self) -> None:
        first = self._stats.first_ts  # counted: the first chunk's earliest packet
        if self._last is not None:
            self.until = self._last
        elif first is not None:
            self.until = first - 1
        self._last = self._stats.last_ts
        if self._inner is not None:
            self._inner()

    def follow(self, stream: Iterator[SipMessage | Tick]) -> Iterator[SipMessage | Tick]:
        yield from stream
        self.until = _DONE


def _drain_findings(results: list[SourceResult], built: Built, sink: RowSink) -> None:
    """Write out and forget the findings raised so far (ingest's, then the calls')."""
    rows = [f.to_dict() for r in results for f in r.findings]
    rows += [f.to_dict() for f in built.findings]
    for r in results:
        r.findings.clear()
    built.findings.clear()
    if rows:
        sink.findings(rows)


def _tail(results: list[SourceResult], built: Built, retransmissions: int) -> dict[str, Any]:
    """The parts of the JSON document that are not rows (docs/json.md), at the end."""
    from sipflow.api import _trace

    doc = _trace(results, built, call_records=[], finding_list=[]).to_dict()
    for key in ("calls", "rtp_streams", "findings"):
        del doc[key]
    doc["stats"]["retransmissions"] += retransmissions
    return doc


# -- worker shards ----------------------------------------------------------------------


@dataclass
class _Worker:
    shard: Shard
    proc: Any
    conn: Connection
    at: int = 0
    opens: list[int] = field(default_factory=list)
    done: bool = False
    final: Report | None = None


class _Workers:
    """The worker shards of a split streaming run, seen from this process."""

    def __init__(self, workers: list[_Worker]) -> None:
        self._w = workers
        self.lost = 0

    @classmethod
    def start(
        cls, paths: list[str], opts: Options, sopts: StreamOptions, shards: int
    ) -> _Workers | None:
        """One process per shard after the first; None when processes cannot be had."""
        from dataclasses import replace

        plain = replace(opts, progress=None)  # callbacks do not travel to workers
        try:
            ctx = mp.get_context("fork")
            workers = []
            for shard in plan(shards)[1:]:
                mine, theirs = ctx.Pipe(duplex=False)
                proc = ctx.Process(target=_worker, args=(paths, shard, plain, theirs), daemon=True)
                proc.start()
                theirs.close()
                workers.append(_Worker(shard, proc, mine))
        except (OSError, ValueError, RuntimeError):  # no processes here (sandbox, semaphores)
            return None
        return cls(workers)

    def poll(self, fin: Finalizer, sink: RowSink, now: int) -> int:
        """Take the reports waiting from workers not ahead of ``now`` by more than
        MAX_LAG_NS (one further ahead waits on its pipe), and wait for a worker more than
        MAX_LAG_NS behind, so the legs held here stay within the window plus the lag; the
        earliest time a live worker has reached."""
        for w in self._w:
            while not w.done:
                if w.at < now - MAX_LAG_NS or (w.at <= now + MAX_LAG_NS and self._ready(w)):
                    self._take(w, fin, sink)
                else:
                    break
        return min((w.at for w in self._w if not w.done), default=_DONE)

    def opens(self) -> list[int]:
        return [t for w in self._w if not w.done for t in w.opens]

    def finish(self, fin: Finalizer, sink: RowSink, results: list[Any], built: Built) -> int:
        """Wait for every worker's last report and add what it counted; lost shards."""
        from sipflow.engine.shard import merge_results

        for w in self._w:
            while not w.done:
                self._take(w, fin, sink)
            w.proc.join(timeout=10)
            if w.final is not None:
                merge_results(results, w.final.sources)
                built.counts.merge(w.final.counts)
                built.activity.merge(w.final.activity)
        return self.lost

    def _ready(self, w: _Worker) -> bool:
        try:
            return w.conn.poll()
        except OSError:
            return True  # closed: _take finds out

    def _take(self, w: _Worker, fin: Finalizer, sink: RowSink) -> None:
        try:
            report: Report = w.conn.recv()
        except (EOFError, OSError):
            self._lost(w, sink)
            return
        w.at, w.opens = report.at, report.opens
        fin.add_legs(report.legs)
        if report.findings:
            sink.findings([f.to_dict() for f in report.findings])
        if report.final:
            w.done, w.final = True, report

    def _lost(self, w: _Worker, sink: RowSink) -> None:
        w.done = True
        self.lost += 1
        w.proc.join(timeout=5)  # its pipe closed: reap it to read how it ended
        code = w.proc.exitcode
        text = (
            f"the worker for Call-ID buckets {w.shard.lo}-{w.shard.hi - 1} stopped (exit"
            f" {code}) before its end: the calls of those Call-IDs not yet written are missing"
        )
        sink.findings([Finding("engine.shard_failed", Severity.ERROR, text).to_dict()])


def _worker(paths: list[str], shard: Shard, opts: Options, conn: Connection) -> None:
    """A worker shard (in its own process): build its calls, report as it goes."""
    from sipflow import api
    from sipflow.correlate.calls import CallBuilder
    from sipflow.gcpause import paused
    from sipflow.trace import ActivitySummary

    with paused():
        results, per_source = api._local_sources(paths, opts, shard)
        built = api.Built(api._Counts(), [], ActivitySummary(keep_records=False), [], [])
        builder = CallBuilder()
        check: int | None = None
        for msg in api._timeline(per_source, results):
            api._step(builder, built, msg, opts)
            if check is None or msg.ts >= check:
                check = msg.ts + STREAM_CHECK_NS
                conn.send(_report(msg.ts, builder.open_starts(), results, built))
        api._take(builder.finish(), built.calls, built.activity, built.findings, False)
        last = _report(_DONE, [], results, built)
        last.final, last.counts, last.activity = True, built.counts, built.activity
        last.sources = [SourcePart(r.malformed, r.stats.duplicates, []) for r in results]
        conn.send(last)
        conn.close()


def _report(at: int, opens: list[int], results: list[Any], built: Built) -> Report:
    """The legs and findings built since the last report (taken from ``built``)."""
    found = [f for r in results for f in r.findings if not f.code.startswith("ingest.")]
    for r in results:
        r.findings.clear()  # shard 0 reports what ingest found
    found += built.findings
    report = Report(at, built.calls, opens, found)
    built.calls, built.findings = [], []
    return report


__all__ = ["STREAM_CHECK_NS", "Report", "StreamResult", "run"]
