"""The per-file stage on all cores: one worker process per file, one merge in the parent.

How this works: :func:`run_file` is the per-source stage of :mod:`sipflow.engine.local`
(ingest, TCP framing, SIP parse, RTP statistics) run to the end of one file; it returns
the file's time-ordered messages and its :class:`~sipflow.engine.local.SourceResult`
(stats, findings, channel events, the RTP collector). :func:`run_sources` runs it for
every file in a :class:`~concurrent.futures.ProcessPoolExecutor` and hands
:func:`sipflow.api.analyze` the same two things the in-process loop builds - one
SourceResult and one message iterator per source - so the merge on one timeline, the
removal of duplicate captures and the CallBuilder run unchanged in the parent. A call
that spans two rotated files is therefore one call, a packet in two overlapping
captures is counted once, and the result equals the single-process one exactly.

What travels between processes (measured by benchmarks/bench_scale.py, docs/scale.md):
the parsed messages, pickled by the worker in runs of ``CHUNK`` and unpickled by the
parent only when the merge reaches them, so the parent holds bytes, not objects, for
files not merged yet; and each source's RTP streams already finished. Sending raw bytes
and re-parsing them in the parent cost the parent more CPU than unpickling, and the
parent (merge, CallBuilder, SDP checks) is the serial part.

A worker that dies (killed, out of memory) costs its file, not the run: the file gets an
``engine.worker_failed`` Finding and is counted as skipped.
"""

from __future__ import annotations

import os
import pickle
import sys
import time
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass

from sipflow.engine.local import SourceResult
from sipflow.engine.progress import ProgressTracker
from sipflow.engine.shard import Tick
from sipflow.findings import Finding, Severity
from sipflow.ingest.tls import TlsKeys, TlsStats
from sipflow.ingest.tls_facts import TlsSessionFacts
from sipflow.ingest.types import Endpoint, SourceStats, Transport
from sipflow.rtp.streams import RtpCollector, RtpStream
from sipflow.sip.message import Origin, SipMessage, parse_message


@dataclass(frozen=True)
class PackedMessages:
    """Messages as their wire bytes and origins in a few flat columns: cheap to pickle,
    about the size of the SIP bytes; :meth:`unpack` parses them again (same results:
    parsing is a pure function of bytes and origin)."""

    source: int
    blob: bytes
    """Every message's raw bytes, back to back."""
    ends: array[int]
    """End offset of each message in ``blob``."""
    ts: array[int]
    frame_ends: array[int]
    """End offset of each message's frame numbers in ``frames``."""
    frames: array[int]
    endpoints: list[tuple[str, int] | None]
    """Distinct (ip, port) pairs; ``src``/``dst`` index them."""
    src: array[int]
    dst: array[int]
    transport: bytes
    """Index of each message's transport in ``_TRANSPORTS``."""

    def __len__(self) -> int:
        return len(self.ends)

    def unpack(self) -> Iterator[SipMessage]:
        """The messages, parsed again one at a time, in their original order."""
        eps = [None if e is None else Endpoint(*e) for e in self.endpoints]
        start = fstart = 0
        for i, end in enumerate(self.ends):
            fend = self.frame_ends[i]
            origin = Origin(
                self.source,
                tuple(self.frames[fstart:fend]),
                self.ts[i],
                eps[self.src[i]],
                eps[self.dst[i]],
                _TRANSPORTS[self.transport[i]],
            )
            yield parse_message(self.blob[start:end], origin)
            start, fstart = end, fend


_TRANSPORTS = tuple(Transport)
_TRANSPORT_INDEX = {t: i for i, t in enumerate(_TRANSPORTS)}


def pack_messages(source: int, messages: list[SipMessage]) -> PackedMessages:
    """The columns of :class:`PackedMessages` for one source's messages."""
    ends, ts, frame_ends, frames = array("q"), array("q"), array("q"), array("q")
    src, dst, transport = array("q"), array("q"), bytearray()
    index: dict[tuple[str, int] | None, int] = {}
    offset = 0
    for m in messages:
        o = m.origin or Origin(source, (), 0)
        offset += len(m.raw)
        ends.append(offset)
        ts.append(o.ts)
        frames.extend(o.frames)
        frame_ends.append(len(frames))
        src.append(index.setdefault(_ep(o.src), len(index)))
        dst.append(index.setdefault(_ep(o.dst), len(index)))
        transport.append(_TRANSPORT_INDEX[o.transport])
    blob = b"".join(m.raw for m in messages)
    eps = list(index)
    return PackedMessages(
        source, blob, ends, ts, frame_ends, frames, eps, src, dst, bytes(transport)
    )


def _ep(ep: Endpoint | None) -> tuple[str, int] | None:
    return None if ep is None else (ep.ip, ep.port)


@dataclass(frozen=True)
class PickledChunks:
    """Messages pickled in runs of ``CHUNK``: the parent holds bytes, not objects, until
    the merge reaches a run (a pickled message is about a third of the object's size)."""

    chunks: list[bytes]
    count: int

    def __len__(self) -> int:
        return self.count

    def unpack(self) -> Iterator[SipMessage]:
        """The messages in order; each run's bytes are dropped once it is unpickled."""
        chunks = self.chunks
        chunks.reverse()
        while chunks:
            run: list[SipMessage] = pickle.loads(chunks.pop())
            yield from run


CHUNK = 500


def pickle_chunks(messages: Iterable[SipMessage]) -> PickledChunks:
    """The messages as :class:`PickledChunks`, pickled as they come (a worker holds the
    bytes of its file's messages, not the objects)."""
    chunks: list[bytes] = []
    run: list[SipMessage] = []
    count = 0
    for msg in messages:
        run.append(msg)
        if len(run) == CHUNK:
            chunks.append(pickle.dumps(run, protocol=pickle.HIGHEST_PROTOCOL))
            count += len(run)
            run = []
    if run:
        chunks.append(pickle.dumps(run, protocol=pickle.HIGHEST_PROTOCOL))
        count += len(run)
    return PickledChunks(chunks, count)


@dataclass(frozen=True)
class FileOutput:
    """What the per-file stage of one source sends back to the merge."""

    source: int
    """Index of the source in the analysis (``Origin.source`` of its messages)."""
    messages: list[SipMessage] | PickledChunks | PackedMessages
    """The source's messages in time order (the local stage's order): objects
    (``transfer="parsed"``), objects pickled in runs (``"chunks"``) or bytes packed
    for a re-parse (``"raw"``)."""
    result: SourceResult
    """Stats, findings, channel events and RTP collector of the source."""
    cpu_s: float
    """CPU seconds the worker spent on the file."""


TRANSFER = "chunks"
"""How messages travel from workers (docs/scale.md has the measurement)."""


class FinishedRtp(RtpCollector):
    """A source's RTP collector finished in the worker: the parent gets the streams (a
    few hundred bytes each) instead of the collector's per-stream arrays, and does not
    spend its serial time on :meth:`RtpCollector.finish`."""

    def __init__(self, done: RtpCollector) -> None:
        super().__init__()
        self.counts = done.counts
        self._streams = done.finish()  # each with its DTMF packets (RtpStream.events)

    def finish(self) -> list[RtpStream]:
        return list(self._streams)


class FinishedTls(TlsStats):
    """A source's TLS facts settled in the worker: its sessions' facts without the live
    decoders, which hold the keys (a loaded RSA key does not pickle)."""

    def __init__(self, done: TlsStats) -> None:
        super().__init__()
        self._sessions = done.tls_sessions

    @property
    def tls_sessions(self) -> list[TlsSessionFacts]:
        return list(self._sessions)


@dataclass(frozen=True)
class Reading:
    """How every source is read, the same in every worker: the TLS key files (docs/tls.md:
    loaded in each worker, a loaded RSA key does not pickle) and the year of a log's
    syslog-style times."""

    tls_keylog: tuple[str, ...] = ()
    tls_keys: tuple[str, ...] = ()
    log_year: int | None = None

    def keys(self) -> TlsKeys | None:
        if not self.tls_keylog and not self.tls_keys:
            return None
        return TlsKeys.load(list(self.tls_keylog), list(self.tls_keys))


def run_file(
    path: str, source: int, transfer: str = TRANSFER, reading: Reading | None = None
) -> FileOutput:
    """The per-source stage, run to the end of one file (in a worker process or task)."""
    from sipflow.api import _guarded  # the in-process loop's error handling, shared

    started = time.process_time()
    how = reading or Reading()
    # no shard: every message, no Tick
    result = SourceResult(SourceStats(path=path), tls_keys=how.keys(), log_year=how.log_year)
    stream = (m for m in _guarded(path, source, result) if not isinstance(m, Tick))
    sent: list[SipMessage] | PickledChunks | PackedMessages
    if transfer == "chunks":
        sent = pickle_chunks(stream)
    else:
        messages = list(stream)
        sent = pack_messages(source, messages) if transfer == "raw" else messages
    result.rtp = FinishedRtp(result.rtp)
    result.tls = FinishedTls(result.tls)
    result.tls_keys = None  # the caller has them (and they do not pickle)
    return FileOutput(source, sent, result, time.process_time() - started)


def resolve_jobs(jobs: int, files: int) -> int:
    """Worker processes for ``files`` files: ``jobs`` <= 0 means one per core."""
    wanted = jobs if jobs > 0 else (os.cpu_count() or 1)
    return max(1, min(wanted, files))


def run_engine(
    paths: Sequence[str],
    engine: str,
    jobs: int,
    scheduler: str | None,
    tracker: ProgressTracker | None = None,
    reading: Reading | None = None,
) -> tuple[list[SourceResult], list[Iterator[SipMessage]]]:
    """The per-file stage on ``engine``: ``local`` (a process pool) or ``dask``."""
    if engine == "local":
        return run_sources(paths, jobs, tracker=tracker, reading=reading)
    if engine == "dask":
        from sipflow.engine.dask_engine import run_sources_dask

        return run_sources_dask(paths, scheduler, tracker=tracker, reading=reading)
    raise ValueError(f"unknown engine {engine!r} (local or dask)")


def run_sources(
    paths: Sequence[str],
    jobs: int = 0,
    progress: bool | None = None,
    transfer: str | None = None,
    tracker: ProgressTracker | None = None,
    reading: Reading | None = None,
) -> tuple[list[SourceResult], list[Iterator[SipMessage]]]:
    """Every file's per-source stage on ``jobs`` worker processes (0: all cores).

    Returns one SourceResult and one time-ordered message iterator per path, in the
    order of ``paths`` - what ``api.analyze`` merges. Messages of a source are released
    as the merge consumes them.
    """
    workers = resolve_jobs(jobs, len(paths))
    outputs: list[FileOutput | None] = [None] * len(paths)
    meter = Progress.for_stderr(len(paths), False if tracker else progress)
    with ProcessPoolExecutor(max_workers=workers) as pool:
        how = transfer or TRANSFER
        futures = [pool.submit(run_file, p, i, how, reading) for i, p in enumerate(paths)]
        for fut in futures:
            fut.add_done_callback(lambda f: meter.done(_frames(f)))
            if tracker is not None:  # Options.progress: a file's packets when its worker ends
                fut.add_done_callback(tracker.worker_done)
        for i, fut in enumerate(futures):
            outputs[i] = _collect(fut, paths[i], i)
    meter.close()
    return collect_outputs([o for o in outputs if o is not None])


def collect_outputs(
    outputs: list[FileOutput],
) -> tuple[list[SourceResult], list[Iterator[SipMessage]]]:
    """FileOutputs (in source order) as the SourceResults and message streams of a run."""
    return [o.result for o in outputs], [_drain(o.messages) for o in outputs]


def failed_output(path: str, source: int, exc: BaseException) -> FileOutput:
    """The output of a file whose worker died: no messages, one Finding saying why."""
    result = SourceResult(SourceStats(path=path))
    result.stats.skipped["worker_failed"] += 1
    text = f"{path}: the worker analysing this file failed: {type(exc).__name__}: {exc}"
    result.findings.append(Finding("engine.worker_failed", Severity.ERROR, text))
    return FileOutput(source, [], result, 0.0)


def _collect(fut: Future[FileOutput], path: str, source: int) -> FileOutput:
    try:
        return fut.result()
    except Exception as exc:  # BrokenProcessPool, a pickling error: the file, not the run
        return failed_output(path, source, exc)


def _frames(fut: Future[FileOutput]) -> int:
    if fut.cancelled() or fut.exception() is not None:
        return 0
    return fut.result().result.stats.frames


def _drain(messages: list[SipMessage] | PickledChunks | PackedMessages) -> Iterator[SipMessage]:
    """Yield the messages front to back, dropping each list slot as it is consumed."""
    if not isinstance(messages, list):
        yield from messages.unpack()
        return
    messages.reverse()
    pop = messages.pop
    while messages:
        yield pop()


class Progress:
    """Files done / total and packets per second on stderr, only when it is a terminal."""

    def __init__(self, total: int, write: Callable[[str], object] | None) -> None:
        self.total = total
        self.files = 0
        self.frames = 0
        self._write = write
        self._start = time.monotonic()

    @classmethod
    def for_stderr(cls, total: int, enabled: bool | None = None) -> Progress:
        on = sys.stderr.isatty() if enabled is None else enabled
        return cls(total, sys.stderr.write if on else None)

    def done(self, frames: int) -> None:
        """One more file finished, with ``frames`` packets read."""
        self.files += 1
        self.frames += frames
        if self._write is not None:
            self._write(f"\r{self.line()}")

    def line(self) -> str:
        rate = self.frames / max(time.monotonic() - self._start, 1e-9)
        return f"sipflow: files {self.files}/{self.total}, {self.frames} packets, {rate:,.0f} pkt/s"

    def close(self) -> None:
        if self._write is not None and self.files:
            self._write("\n")
