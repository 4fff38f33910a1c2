"""The analysis progress bar of the CLI: rich on stderr when it is a terminal, else nothing.

How this works: :func:`analysis_progress` yields the callback to put in
``Options.progress`` (:mod:`sipflow.engine.progress` sends it a ``ProgressEvent`` per chunk
of records, at most ten a second, and one per file finished), or None when stderr is not
a terminal, so pipes, files and CI logs get no progress text at all. The bar measures
bytes read against the input files' size when every input is a regular file (stdin is
not), otherwise files done against files given; beside it: files done/total, packets,
megabytes and packets per second. rich is imported only when a bar is drawn.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from sipflow.engine.progress import ProgressCallback, ProgressEvent


def status_line(e: ProgressEvent) -> str:
    """``files 1/3 · 311,300 packets · 84.2 MB · 152,000 pkt/s``."""
    return (
        f"files {e.files_done}/{e.files_total} · {e.packets:,} packets · "
        f"{e.bytes / 1e6:,.1f} MB · {e.packets_per_s:,.0f} pkt/s"
    )


def bar_position(e: ProgressEvent) -> tuple[float, float]:
    """(completed, total) of the bar: bytes of the input files, or files."""
    if e.bytes_total:
        total = float(e.bytes_total)
        return (total if e.finished else min(float(e.bytes), total)), total
    return float(e.files_done), float(max(e.files_total, 1))


@contextmanager
def analysis_progress(
    label: str = "analysing", stream: TextIO | None = None
) -> Iterator[ProgressCallback | None]:
    """A callback drawing a rich bar on ``stream`` (stderr) when it is a terminal; None
    (and nothing written) otherwise."""
    out = stream if stream is not None else sys.stderr
    if not out.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=Console(file=out), transient=True) as bar:
        task = bar.add_task(label, total=None, status="")

        def show(e: ProgressEvent) -> None:
            completed, total = bar_position(e)
            bar.update(task, completed=completed, total=total, status=status_line(e))

        yield show
