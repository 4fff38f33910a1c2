"""Progress of an analysis: files done / total, packets and bytes read, packets per second.

How this works: ``Options.progress`` is a callback taking a frozen :class:`ProgressEvent`.
:class:`ProgressTracker` turns what the engine already knows into those events, at chunk
granularity, never per packet:

- in this process, ingest calls :meth:`ProgressTracker.chunk_hook`'s hook once per chunk
  of records it decoded (``SourceStats`` then holds the packets and bytes read so far);
- with worker processes or Dask, a file's packets and bytes arrive when its worker is
  done (:meth:`ProgressTracker.read`);
- a file is *done* when the merge has taken its last message (:meth:`ProgressTracker.follow`),
  so ``files_done == files_total`` only once every source is analysed.

Chunk events are sent at most every ``min_interval_s``; a file finishing always sends one.
The tracker only counts and calls back: rendering (a rich bar on a terminal) is the CLI's.
Worker-pool callbacks run on another thread, so counting is under a lock.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from concurrent.futures import Future

    from sipflow.engine.local import SourceResult
    from sipflow.engine.pool import FileOutput
    from sipflow.ingest.types import SourceStats

T = TypeVar("T")

MIN_INTERVAL_S = 0.1
"""Chunk events closer together than this are not sent (a file finishing always is)."""


@dataclass(frozen=True, slots=True)
class ProgressEvent:
    """How far an analysis has got."""

    files_done: int
    """Sources fully analysed (their last message merged)."""
    files_total: int
    packets: int
    """Records read so far over every source (capture frames; a log's entries)."""
    bytes: int
    """Bytes of those records (captured bytes; a log's text)."""
    bytes_total: int | None
    """Size of the input files, when every one is a regular file (not stdin)."""
    elapsed_s: float
    """Seconds since the analysis began."""
    path: str | None = None
    """The source the event is about (None for the last one)."""

    @property
    def packets_per_s(self) -> float:
        return self.packets / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def finished(self) -> bool:
        return self.files_done == self.files_total


ProgressCallback = Callable[[ProgressEvent], None]
"""What ``Options.progress`` holds."""


def _size(path: str) -> int | None:
    if path == "-":
        return None
    try:
        return os.stat(path).st_size
    except OSError:
        return None


class ProgressTracker:
    """Counts what the engine reports and sends :class:`ProgressEvent` to one callback."""

    def __init__(
        self,
        paths: Sequence[str],
        callback: ProgressCallback,
        min_interval_s: float = MIN_INTERVAL_S,
    ) -> None:
        self.paths = list(paths)
        self.callback = callback
        self.min_interval_s = min_interval_s
        sizes = [_size(p) for p in self.paths]
        self.bytes_total = sum(s for s in sizes if s is not None) if None not in sizes else None
        self._read: dict[int, tuple[int, int]] = {}
        self._packets = self._bytes = 0
        self._done: set[int] = set()
        self._lock = threading.Lock()
        self._start = time.monotonic()
        self._last = float("-inf")
        self.sent = 0

    # -- what the engine reports -------------------------------------------------------------

    def read(self, source: int, stats: SourceStats, force: bool = False) -> None:
        """Source ``source`` has read ``stats.frames`` records (``stats.bytes`` bytes)."""
        with self._lock:
            old_p, old_b = self._read.get(source, (0, 0))
            self._read[source] = (stats.frames, stats.bytes)
            self._packets += stats.frames - old_p
            self._bytes += stats.bytes - old_b
            self._emit(source, force)

    def worker_done(self, fut: Future[FileOutput]) -> None:
        """A worker process finished a file (a ``Future.add_done_callback`` callback)."""
        if fut.cancelled() or fut.exception() is not None:
            return
        out = fut.result()
        self.read(out.source, out.result.stats, force=True)

    def chunk_hook(self, source: int, stats: SourceStats) -> Callable[[], None]:
        """The hook ingest calls after each chunk of ``source`` (``stats`` is updated)."""
        return lambda: self.read(source, stats)

    @classmethod
    def start(
        cls, paths: Sequence[str], callback: ProgressCallback | None
    ) -> ProgressTracker | None:
        """A tracker for ``callback``; None when there is no callback (nothing is tracked)."""
        return None if callback is None else cls(paths, callback)

    def attach(
        self, results: Sequence[SourceResult], streams: Sequence[Iterator[T]]
    ) -> list[Iterator[T]]:
        """Hook every source: its chunks (read in this process) and the end of its stream."""
        for i, r in enumerate(results):
            r.on_chunk = self.chunk_hook(i, r.stats)
        return self.follow([r.stats for r in results], streams)

    def follow(
        self, stats: Sequence[SourceStats], streams: Sequence[Iterator[T]]
    ) -> list[Iterator[T]]:
        """The sources' message streams, each telling the tracker when it is exhausted."""
        return [self._watch(i, stats[i], s) for i, s in enumerate(streams)]

    def _watch(self, source: int, stats: SourceStats, stream: Iterator[T]) -> Iterator[T]:
        yield from stream
        with self._lock:
            self._done.add(source)
        self.read(source, stats, force=True)

    def finish(self) -> None:
        """The last event: every file done (also for sources that failed early)."""
        with self._lock:
            self._done = set(range(len(self.paths)))
            self._emit(None, True)

    # -- events ------------------------------------------------------------------------------

    def event(self, source: int | None = None) -> ProgressEvent:
        return ProgressEvent(
            files_done=len(self._done),
            files_total=len(self.paths),
            packets=self._packets,
            bytes=self._bytes,
            bytes_total=self.bytes_total,
            elapsed_s=time.monotonic() - self._start,
            path=self.paths[source] if source is not None else None,
        )

    def _emit(self, source: int | None, force: bool) -> None:
        now = time.monotonic()
        if not force and now - self._last < self.min_interval_s:
            return
        self._last = now
        self.sent += 1
        self.callback(self.event(source))
