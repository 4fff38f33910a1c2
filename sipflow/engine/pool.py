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

What travels between processes (measured, docs/scale.md): the parsed messages, pickled
together with the SourceResult (one pickle, so a log's ``log_messages`` stay the same
objects as its stream). Sending raw bytes and re-parsing in the parent cost the parent
more CPU than unpickling, and the parent is the serial part.

A worker that dies (killed, out of memory) costs its file, not the run: the file gets an
``engine.worker_failed`` Finding and is counted as skipped.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass

from sipflow.engine.local import SourceResult
from sipflow.findings import Finding, Severity
from sipflow.ingest.types import SourceStats
from sipflow.sip.message import SipMessage


@dataclass(frozen=True)
class FileOutput:
    """What the per-file stage of one source sends back to the merge."""

    source: int
    """Index of the source in the analysis (``Origin.source`` of its messages)."""
    messages: list[SipMessage]
    """The source's messages in time order (the local stage's order)."""
    result: SourceResult
    """Stats, findings, channel events and RTP collector of the source."""
    cpu_s: float
    """CPU seconds the worker spent on the file."""


def run_file(path: str, source: int) -> FileOutput:
    """The per-source stage, run to the end of one file (in a worker process or task)."""
    from sipflow.api import _guarded  # the in-process loop's error handling, shared

    started = time.process_time()
    result = SourceResult(SourceStats(path=path))
    messages = list(_guarded(path, source, result))
    return FileOutput(source, messages, result, time.process_time() - started)


def resolve_jobs(jobs: int, files: int) -> int:
    """Worker processes for ``files`` files: ``jobs`` <= 0 means one per core."""
    wanted = jobs if jobs > 0 else (os.cpu_count() or 1)
    return max(1, min(wanted, files))


def run_engine(
    paths: Sequence[str], engine: str, jobs: int, scheduler: str | None
) -> tuple[list[SourceResult], list[Iterator[SipMessage]]]:
    """The per-file stage on ``engine``: ``local`` (a process pool) or ``dask``."""
    if engine == "local":
        return run_sources(paths, jobs)
    if engine == "dask":
        from sipflow.engine.dask_engine import run_sources_dask

        return run_sources_dask(paths, scheduler)
    raise ValueError(f"unknown engine {engine!r} (local or dask)")


def run_sources(
    paths: Sequence[str], jobs: int = 0, progress: bool | None = None
) -> tuple[list[SourceResult], list[Iterator[SipMessage]]]:
    """Every file's per-source stage on ``jobs`` worker processes (0: all cores).

    Returns one SourceResult and one time-ordered message iterator per path, in the
    order of ``paths`` - what ``api.analyze`` merges. Messages of a source are released
    as the merge consumes them.
    """
    workers = resolve_jobs(jobs, len(paths))
    outputs: list[FileOutput | None] = [None] * len(paths)
    meter = Progress.for_stderr(len(paths), progress)
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(run_file, p, i) for i, p in enumerate(paths)]
        for fut in futures:
            fut.add_done_callback(lambda f: meter.done(_frames(f)))
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


def _drain(messages: list[SipMessage]) -> Iterator[SipMessage]:
    """Yield the messages front to back, dropping each list slot as it is consumed."""
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
