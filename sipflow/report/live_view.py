"""What ``sipflow live`` shows: a live call table, plain lines, or JSON lines.

How this works: :mod:`sipflow.engine.live` calls a view with each finished call (the
``analyze --format json`` call dict plus its findings), ``update`` on every tick, and
``close`` with the closing summary lines. :class:`RichView` keeps a ``rich`` Live table of
open and recently finished calls on a terminal and prints each finished call above it;
:class:`PlainView` prints one line per finished call (and one per finding) when stdout is
not a terminal; :class:`JsonLinesView` writes one JSON object per finished call to stdout
and the summary to stderr, for machines.
"""

from __future__ import annotations

import json
import sys
import time
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from rich.live import Live
    from rich.table import Table

    from sipflow.engine.live import CallRow, LiveSession
    from sipflow.findings import Finding

__all__ = ["JsonLinesView", "PlainView", "RichView", "call_line", "make_view"]

NS = 1_000_000_000


def _clock(ts: float | int | None, ns: bool = False) -> str:
    if ts is None:
        return "-"
    secs = ts / NS if ns else float(ts)
    return time.strftime("%H:%M:%S", time.localtime(secs)) + f".{int(secs * 1000) % 1000:03d}"


def call_line(call: dict[str, Any]) -> str:
    """One finished call as a line of text."""
    code = call.get("final_code") or "-"
    dur = call.get("duration_s")
    dur_s = f"{dur:.1f}s" if isinstance(dur, int | float) else "-"
    cid = (call.get("call_ids") or ["?"])[0]
    return (
        f"{_clock(call.get('start'))} {call.get('outcome', '?'):<12} {code!s:>3} "
        f"{call.get('caller') or '?'} -> {call.get('callee') or '?'} {dur_s} "
        f"msgs={call.get('messages', 0)} call-id={cid}"
    )


def _finding_line(f: Finding) -> str:
    frames = ",".join(str(r.frame) for r in f.refs[:5])
    where = f" [frames {frames}]" if frames else ""
    return f"    {f.severity.value}: {f.code}: {f.message}{where}"


class PlainView:
    """One line per finished call and per finding; nothing on ticks."""

    def __init__(self, out: TextIO | None = None) -> None:
        self.out = out or sys.stdout

    def call(self, call: dict[str, Any], findings: list[Finding]) -> None:
        lines = [call_line(call), *(_finding_line(f) for f in findings)]
        self.out.write("\n".join(lines) + "\n")
        self.out.flush()

    def update(self, session: LiveSession) -> None:
        return None

    def close(self, session: LiveSession, lines: list[str]) -> None:
        self.out.write("\n".join(lines) + "\n")
        self.out.flush()


class JsonLinesView:
    """One JSON object per finished call on stdout (``findings`` added); summary on stderr."""

    def __init__(self, out: TextIO | None = None, err: TextIO | None = None) -> None:
        self.out = out or sys.stdout
        self.err = err or sys.stderr

    def call(self, call: dict[str, Any], findings: list[Finding]) -> None:
        doc = dict(call, findings=[f.to_dict() for f in findings])
        self.out.write(json.dumps(doc, separators=(",", ":")) + "\n")
        self.out.flush()

    def update(self, session: LiveSession) -> None:
        return None

    def close(self, session: LiveSession, lines: list[str]) -> None:
        self.err.write("\n".join(lines) + "\n")
        self.err.flush()


_STYLE = {
    "answered": "green",
    "ringing": "yellow",
    "calling": "cyan",
    "failed": "red",
    "ending": "magenta",
    "busy": "red",
    "rejected": "red",
    "cancelled": "yellow",
    "no-answer": "red",
    "auth-failed": "red",
}


class RichView:
    """A rich Live table of open and recently finished calls (a terminal only)."""

    def __init__(self, max_rows: int = 30) -> None:
        from rich.console import Console
        from rich.live import Live

        self.console = Console()
        self.max_rows = max_rows
        self.live: Live = Live(console=self.console, refresh_per_second=4, transient=False)
        self.live.start()

    def call(self, call: dict[str, Any], findings: list[Finding]) -> None:
        style = _STYLE.get(str(call.get("outcome")), "white")
        self.console.print(f"[{style}]{call_line(call)}[/]", highlight=False, markup=True)
        for f in findings:
            self.console.print(_finding_line(f), highlight=False, markup=False)

    def update(self, session: LiveSession) -> None:
        open_rows, done = session.table()
        self.live.update(self._table(open_rows, done, session))

    def _table(self, open_rows: list[CallRow], done: list[CallRow], s: LiveSession) -> Table:
        from rich.table import Table

        st = s.stats
        t = Table(
            title=f"sipflow live - {len(open_rows)} open, {st.calls} finished, "
            f"{st.messages} SIP messages, {st.frames} frames",
            expand=True,
        )
        for col in ("start", "state", "last", "caller", "callee", "msgs", "call-id"):
            t.add_column(col, overflow="ellipsis", no_wrap=True)
        rows = (open_rows + done[::-1])[: self.max_rows]
        for r in rows:
            state = r.outcome or r.state
            t.add_row(
                _clock(r.start, ns=True),
                f"[{_STYLE.get(state, 'white')}]{state}[/]",
                r.last,
                r.caller,
                r.callee,
                str(r.messages),
                r.call_id,
            )
        return t

    def close(self, session: LiveSession, lines: list[str]) -> None:
        self.update(session)
        self.live.stop()
        for line in lines:
            self.console.print(line, highlight=False, markup=False)


def make_view(json_lines: bool, tty: bool | None = None) -> PlainView | JsonLinesView | RichView:
    """JSON lines when asked; the rich table on a terminal; plain lines otherwise."""
    if json_lines:
        return JsonLinesView()
    if tty if tty is not None else sys.stdout.isatty():
        return RichView()
    return PlainView()
