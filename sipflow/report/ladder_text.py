"""Terminal ladder: one line per message, box-drawing lanes, a time and delta gutter.

How this works: each lane gets a column ``spacing`` characters apart; an arrow row fills
the cells between its two lanes with ``─`` (``┄`` for a retransmission), puts the label
in the middle and the head (``►``/``◄``) at the receiving lane. A PBX channel state mark
is a ``◆`` on its lane with the transition written after the last lane. Notes after the
diagram (SDP summary, findings) name the row number. ANSI colour only when asked (the
CLI asks when stdout is a tty); without colour the text is plain and paste-able.
"""

from __future__ import annotations

from sipflow.report.ladder import Arrow, LadderModel, Mark

GUTTER = 24
MIN_SPACING = 20
MAX_SPACING = 40
RESET = "\x1b[0m"
COLOURS = {"request": "\x1b[36m", "1": "\x1b[2m", "2": "\x1b[32m", "3": "\x1b[33m"}
FAIL = "\x1b[31m"
DIM = "\x1b[2m"
MARK_COLOUR = "\x1b[35m"


def _spacing(model: LadderModel) -> int:
    widest = max((len(a.label) for a in model.arrows), default=0) + 6
    return max(MIN_SPACING, min(MAX_SPACING, widest))


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(0, width - 1)] + "…"


def _col(lane: int, spacing: int) -> int:
    return GUTTER + spacing // 2 + lane * spacing


def _blank(model: LadderModel, spacing: int) -> list[str]:
    cells = [" "] * (GUTTER + spacing * len(model.lanes))
    for lane in model.lanes:
        cells[_col(lane.index, spacing)] = "│"
    return cells


def _centre(cells: list[str], text: str, col: int, width: int) -> None:
    text = _cut(text, width)
    start = col - len(text) // 2
    start = max(0, min(start, len(cells) - len(text)))
    cells[start : start + len(text)] = list(text)


def _header(model: LadderModel, spacing: int) -> list[str]:
    keys = [" "] * len(_blank(model, spacing))
    labels = list(keys)
    for lane in model.lanes:
        col = _col(lane.index, spacing)
        _centre(keys, lane.key, col, spacing - 2)
        _centre(labels, lane.label, col, spacing - 2)
    keys[:GUTTER] = list(" time (s)".ljust(12) + "delta (ms)".ljust(GUTTER - 12))
    lines = ["".join(keys).rstrip()]
    if any(lane.label for lane in model.lanes):
        lines.append("".join(labels).rstrip())
    for lane in model.lanes:
        if lane.aliases:
            lines.append(f"  lane {lane.key} also as {', '.join(lane.aliases)}")
    return lines


def _gutter(ts: int, start: int, delta: int | None) -> str:
    rel = f"{(ts - start) / 1e9:10.6f}"
    d = "" if delta is None else f"{delta / 1e6:+10.3f}"
    return f"{rel} {d}".ljust(GUTTER)


def _colour(a: Arrow) -> str:
    if a.retransmission:
        return DIM
    if a.is_request:
        return COLOURS["request"]
    return COLOURS.get(str(a.status)[0], FAIL)


def arrow_line(model: LadderModel, a: Arrow, spacing: int, colour: bool) -> str:
    cells = _blank(model, spacing)
    cells[:GUTTER] = list(_gutter(a.ts, model.start, a.delta))
    lo, hi = sorted((_col(a.src, spacing), _col(a.dst, spacing)))
    label = a.label + (" (rtx)" if a.retransmission else "") + (" +SDP" if a.sdp else "")
    if lo == hi:  # sender and receiver on one lane (merged aliases)
        _place(cells, lo + 1, f"↺ {label}")
    else:
        dash = "┄" if a.retransmission else "─"
        cells[lo + 1 : hi] = [dash] * (hi - lo - 1)
        _centre(cells, f" {label} ", (lo + hi) // 2, hi - lo - 5)
        if a.dst > a.src:
            cells[hi - 1] = "►"
        else:
            cells[lo + 1] = "◄"
    note = f"  [{a.index + 1}]" + (" !" if a.badges else "")
    line = "".join(cells).rstrip() + note
    if colour:
        line = line[:GUTTER] + _colour(a) + line[GUTTER:] + RESET
    return line


def _place(cells: list[str], col: int, text: str) -> None:
    end = min(len(cells), col + len(text))
    cells[col:end] = list(text[: end - col])


def mark_line(model: LadderModel, m: Mark, spacing: int, colour: bool) -> str:
    cells = _blank(model, spacing)
    cells[:GUTTER] = list(_gutter(m.ts, model.start, None))
    cells[_col(m.lane, spacing)] = "◆"
    line = "".join(cells).rstrip() + f"  {m.text}  ({m.channel}, log line {m.line})"
    return MARK_COLOUR + line + RESET if colour else line


def notes(model: LadderModel) -> list[str]:
    out: list[str] = []
    for a in model.arrows:
        if a.sdp:
            out.append(f"  [{a.index + 1}] SDP {a.sdp}")
        for b in a.badges:
            out.append(f"  [{a.index + 1}] {b.severity} {b.code}: {b.message}")
    return out


def render_text(model: LadderModel, colour: bool = False) -> str:
    """The ladder as lines of text (ends with a newline)."""
    spacing = _spacing(model)
    lines = [model.title, "Call-ID: " + ", ".join(model.call_ids)]
    lines += [f"  leg {e}" for e in model.evidence]
    lines += ["", *_header(model, spacing)]
    for row in model.rows:
        if row.kind == "arrow":
            lines.append(arrow_line(model, model.arrows[row.index], spacing, colour))
        else:
            lines.append(mark_line(model, model.marks[row.index], spacing, colour))
    extra = notes(model)
    if extra:
        lines += ["", "Notes", *extra]
    rtx = model.retransmissions
    lines += ["", f"{len(model.arrows)} messages, {rtx} retransmissions, {len(model.marks)} marks"]
    lines += [f"  left out: {why} x{n}" for why, n in model.skipped.items()]
    return "\n".join(lines) + "\n"
