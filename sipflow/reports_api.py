"""Report entry points used by the CLI and notebooks: ladders, CDR files, the HTML report.

How this works: each function analyses sources with messages and records kept (ladders
and CDR columns need the messages), then hands the Trace to a renderer in
:mod:`sipflow.report`. Nothing here parses or draws; it only chooses.
"""

from __future__ import annotations

import enum
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sipflow.api import Options, analyze
from sipflow.engine.progress import ProgressCallback
from sipflow.trace import Trace

Progress = Callable[[int, int], None]
"""``progress(done, total)``: called while long work runs (may be None)."""


class LadderFormat(enum.Enum):
    text = "text"
    svg = "svg"
    html = "html"
    mermaid = "mermaid"
    plantuml = "plantuml"


class CallNotFound(LookupError):
    """No call matches the Call-ID / number asked for."""


def full_trace(sources: Iterable[str | Path], progress: ProgressCallback | None = None) -> Trace:
    """Analyse with every message and transaction record kept."""
    return analyze(sources, Options(keep_messages=True, keep_records=True, progress=progress))


def render_ladder(trace: Trace, call: str, fmt: LadderFormat, colour: bool = False) -> str:
    """One call's ladder in ``fmt``; ``call`` is a Call-ID, a unique prefix or a number."""
    from sipflow.report import html, mermaid, svg
    from sipflow.report.ladder import build_ladder, find_call
    from sipflow.report.ladder_text import render_text

    index = find_call(trace, call)
    if index is None:
        raise CallNotFound(f"no call matches {call!r} ({len(trace.call_records)} calls)")
    model = build_ladder(trace, index)
    if fmt is LadderFormat.text:
        return render_text(model, colour)
    if fmt is LadderFormat.svg:
        return svg.render_svg(model) + "\n"
    if fmt is LadderFormat.mermaid:
        return mermaid.to_mermaid(model)
    if fmt is LadderFormat.plantuml:
        return mermaid.to_plantuml(model)
    return "<!DOCTYPE html>\n<meta charset='utf-8'>\n" + html.call_html(model)


@dataclass(frozen=True)
class CdrResult:
    """What ``write_cdr_file`` wrote, and the KPI lines."""

    rows: int
    format: str
    summary: list[str]


def write_cdr_file(trace: Trace, output: str | Path) -> CdrResult:
    """Write the CDR (format from the suffix: .csv, .json, .parquet)."""
    from sipflow.report.cdr import cdr_rows, kpi_lines, kpis, write_cdr

    rows = cdr_rows(trace)
    fmt = write_cdr(rows, output)
    return CdrResult(len(rows), fmt, kpi_lines(kpis(rows)))


def cdr_summary(trace: Trace) -> list[str]:
    from sipflow.report.cdr import cdr_rows, kpi_lines, kpis

    return kpi_lines(kpis(cdr_rows(trace)))


def write_html(
    trace: Trace, output: str | Path, title: str | None = None, progress: Progress | None = None
) -> int:
    """Write the self-contained HTML report; returns its size in bytes."""
    from sipflow.report.html import write_report

    return write_report(trace, output, title, progress)


@contextmanager
def progress_bar(label: str) -> Iterator[Progress | None]:
    """A rich progress bar on stderr when stderr is a terminal (and rich is installed);
    otherwise None, and the work stays quiet."""
    if not sys.stderr.isatty():
        yield None
        return
    try:
        from rich.console import Console
        from rich.progress import Progress as Bar
    except ImportError:
        yield None
        return
    with Bar(console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(label, total=None)

        def advance(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield advance
