"""SVG ladder: lanes as vertical lines, one ``<g class="arrow">`` per message.

How this works: geometry is computed from the model alone (no font metrics: text widths
are estimated at ``CHAR_W`` pixels per character and long labels are cut). Each arrow
group carries ``data-i`` (row in the ladder) and ``data-msg`` (index in the trace's
message list) so the HTML report can show the message on click, a ``<title>`` tooltip,
its time and delta in the left gutter, the SDP summary under the label and one badge per
finding severity. Retransmissions are dashed; PBX channel marks are small diamonds on
their lane with the transition beside them. Under the rows, one ``<g class="leg-note">``
per leg tied into the call says in two lines how (rule, confidence, evidence; ``data-call-id``,
``data-rule`` and ``data-confidence`` carry them for scripts and tests). The SVG carries
its own ``<style>`` so a
file written alone renders the same as one inside the report. Ids are prefixed so
several ladders can share a page.
"""

from __future__ import annotations

from html import escape

from sipflow.report.ladder import Arrow, LadderModel, Mark
from sipflow.report.story import LegNote

CHAR_W = 6.6
ROW_H = 34
HEAD_H = 58
NOTE_H = 16
GUTTER_W = 150
MIN_SPACING = 170
MAX_SPACING = 320
SEVERITY_ORDER = ("error", "warning", "info")
HEAD_FILL = {"req": "#1f6feb", "r1": "#7b8794", "r2": "#1a7f37", "r3": "#9a6700", "rf": "#cf222e"}

STYLE = """
.sf-ladder{font:12px system-ui,-apple-system,'Segoe UI',sans-serif;background:#fff}
.sf-ladder .lane-line{stroke:#9aa5b1;stroke-width:1}
.sf-ladder .lane-key{font-weight:600;text-anchor:middle}
.sf-ladder .lane-label{fill:#52606d;font-size:11px;text-anchor:middle}
.sf-ladder .gutter{fill:#52606d;font:11px ui-monospace,monospace}
.sf-ladder .shaft{stroke-width:1.6;fill:none}
.sf-ladder .arrow{cursor:pointer}
.sf-ladder .arrow:hover .shaft,.sf-ladder .arrow.sel .shaft{stroke-width:3}
.sf-ladder .arrow .hit{stroke:transparent;stroke-width:14}
.sf-ladder .label{text-anchor:middle}
.sf-ladder .sdp{text-anchor:middle;font-size:10px;fill:#3e4c59}
.sf-ladder .req .shaft{stroke:#1f6feb}.sf-ladder .req .label{fill:#0b3d91}
.sf-ladder .r1 .shaft{stroke:#7b8794}.sf-ladder .r1 .label{fill:#52606d}
.sf-ladder .r2 .shaft{stroke:#1a7f37}.sf-ladder .r2 .label{fill:#116329}
.sf-ladder .r3 .shaft{stroke:#9a6700}.sf-ladder .r3 .label{fill:#7d4e00}
.sf-ladder .rf .shaft{stroke:#cf222e}.sf-ladder .rf .label{fill:#a40e26;font-weight:600}
.sf-ladder .rtx .shaft{stroke-dasharray:5 4;opacity:.7}
.sf-ladder .badge.error{fill:#cf222e}.sf-ladder .badge.warning{fill:#bf8700}
.sf-ladder .badge.info{fill:#0969da}.sf-ladder .badge-t{fill:#fff;font-size:10px;
text-anchor:middle;font-weight:700}
.sf-ladder .mark path{fill:#8250df}.sf-ladder .mark text{fill:#6639ba;font-size:10px}
.sf-ladder .leg-note text{fill:#3e4c59;font-size:11px}
"""


def _spacing(model: LadderModel) -> int:
    widest = max((len(a.label) for a in model.arrows), default=0)
    widest = max(widest, *(len(lane.key) for lane in model.lanes), 0)
    return int(max(MIN_SPACING, min(MAX_SPACING, widest * CHAR_W + 40)))


def _x(lane: int, spacing: int) -> float:
    return GUTTER_W + spacing / 2 + lane * spacing


def _cut(text: str, width_px: float) -> str:
    n = max(3, int(width_px / CHAR_W))
    return text if len(text) <= n else text[: n - 1] + "…"


def _family(a: Arrow) -> str:
    if a.is_request:
        return "req"
    return {"1": "r1", "2": "r2", "3": "r3"}.get(str(a.status)[:1], "rf")


def _kind(a: Arrow) -> str:
    return f"arrow {_family(a)}" + (" rtx" if a.retransmission else "")


def _lanes(model: LadderModel, spacing: int, height: int) -> list[str]:
    out = ['<g class="lanes">']
    for lane in model.lanes:
        x = _x(lane.index, spacing)
        title = lane.key + (f" (also {', '.join(lane.aliases)})" if lane.aliases else "")
        out.append(
            f'<g class="lane" data-lane="{lane.index}"><title>{escape(title)}</title>'
            f'<text class="lane-key" x="{x:.1f}" y="18">{escape(_cut(lane.key, spacing))}</text>'
            f'<text class="lane-label" x="{x:.1f}" y="34">{escape(_cut(lane.label, spacing))}'
            f'</text><line class="lane-line" x1="{x:.1f}" y1="42" x2="{x:.1f}" y2="{height}"/>'
            "</g>"
        )
    out.append("</g>")
    return out


def _badges(a: Arrow, x: float, y: float) -> str:
    parts = []
    for sev in SEVERITY_ORDER:
        found = [b for b in a.badges if b.severity == sev]
        if not found:
            continue
        tip = escape("\n".join(f"{b.code}: {b.message}" for b in found))
        parts.append(
            f'<g class="badge-g"><title>{tip}</title>'
            f'<circle class="badge {sev}" cx="{x:.1f}" cy="{y:.1f}" r="7"/>'
            f'<text class="badge-t" x="{x:.1f}" y="{y + 3.5:.1f}">{len(found)}</text></g>'
        )
        x += 16
    return "".join(parts)


def _gutter(ts: int, start: int, delta: int | None, y: float) -> str:
    rel = f"{(ts - start) / 1e9:.6f}"
    d = "" if delta is None else f"+{delta / 1e6:.3f}ms"
    return (
        f'<text class="gutter" x="6" y="{y:.1f}">{rel}</text>'
        f'<text class="gutter" x="{GUTTER_W - 12}" y="{y:.1f}" text-anchor="end">{d}</text>'
    )


def _arrow(model: LadderModel, a: Arrow, y: float, spacing: int, pid: str) -> str:
    x1, x2 = _x(a.src, spacing), _x(a.dst, spacing)
    label = _cut(a.label, max(abs(x2 - x1) - 20, spacing - 20))
    title = escape(f"[{a.index + 1}] {a.text.splitlines()[0] if a.text else a.label}")
    if x1 == x2:
        shape = f"M{x1:.1f},{y - 6:.1f} h40 v12 h-40"
        mid, end = x1 + 60, x1 + 48
    else:
        head = -8 if x2 > x1 else 8
        shape = f"M{x1:.1f},{y:.1f} L{x2 + head:.1f},{y:.1f}"
        mid, end = (x1 + x2) / 2, max(x1, x2) + 14
    sdp = ""
    if a.sdp:
        text = escape(_cut(a.sdp, spacing))
        sdp = f'<text class="sdp" x="{mid:.1f}" y="{y + 12:.1f}">{text}</text>'
    return (
        f'<g class="{_kind(a)}" data-i="{a.index}" data-msg="{a.message}"><title>{title}</title>'
        + _gutter(a.ts, model.start, a.delta, y + 4)
        + f'<path class="hit" d="{shape}"/>'
        + f'<path class="shaft" d="{shape}" marker-end="url(#{pid}-{_family(a)})"/>'
        + f'<text class="label" x="{mid:.1f}" y="{y - 5:.1f}">{escape(label)}'
        + ("" if not a.retransmission else " (rtx)")
        + "</text>"
        + sdp
        + _badges(a, end, y)
        + "</g>"
    )


def _mark(model: LadderModel, m: Mark, y: float, spacing: int) -> str:
    x = _x(m.lane, spacing)
    tip = escape(f"{m.channel}: {m.text} (log line {m.line})")
    return (
        f'<g class="mark" data-lane="{m.lane}"><title>{tip}</title>'
        + _gutter(m.ts, model.start, None, y + 4)
        + f'<path d="M{x:.1f},{y - 6:.1f} l6,6 l-6,6 l-6,-6 z"/>'
        + f'<text x="{x + 10:.1f}" y="{y + 4:.1f}">{escape(_cut(m.text, spacing - 16))}</text></g>'
    )


def _leg_note(note: LegNote, y: float, width: int) -> str:
    """Two lines: which leg continues which; the rule, confidence and evidence."""
    conf = "" if note.confidence is None else f' data-confidence="{note.confidence}"'
    return (
        f'<g class="leg-note" data-call-id="{escape(note.call_id)}" '
        f'data-rule="{escape(note.rule)}"{conf}><title>{escape(chr(10).join(note.evidence))}'
        f'</title><text x="6" y="{y:.1f}">leg {escape(_cut(note.head(), width - 40))}</text>'
        f'<text x="18" y="{y + NOTE_H:.1f}">{escape(_cut(note.detail(), width - 24))}</text></g>'
    )


def render_svg(model: LadderModel, id_prefix: str = "sf", style: bool = True) -> str:
    """The ladder as a standalone ``<svg>`` element (UTF-8 text). ``style=False`` leaves
    out the ``<style>`` (a page that holds many ladders includes :data:`STYLE` once)."""
    spacing = _spacing(model)
    width = int(GUTTER_W + spacing * max(1, len(model.lanes)) + 40)
    rows_end = HEAD_H + ROW_H * len(model.rows)
    height = rows_end + 10 + 2 * NOTE_H * len(model.legs)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="sf-ladder" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" data-arrows="{len(model.arrows)}">',
        f"<title>{escape(model.title)}</title>" + (f"<style>{STYLE}</style>" if style else ""),
        _defs(model_id(id_prefix)),
        *_lanes(model, spacing, rows_end + 10),
        '<g class="rows">',
    ]
    for n, row in enumerate(model.rows):
        y = HEAD_H + ROW_H * n + ROW_H / 2
        if row.kind == "arrow":
            out.append(_arrow(model, model.arrows[row.index], y, spacing, model_id(id_prefix)))
        else:
            out.append(_mark(model, model.marks[row.index], y, spacing))
    out.append("</g>")
    if model.legs:
        out.append('<g class="legs">')
        for n, note in enumerate(model.legs):
            out.append(_leg_note(note, rows_end + NOTE_H * (2 * n + 1), width))
        out.append("</g>")
    out.append("</svg>")
    return "\n".join(out)


def _defs(pid: str) -> str:
    markers = "".join(
        f'<marker id="{pid}-{fam}" viewBox="0 0 10 10" refX="2" refY="5" markerWidth="8" '
        f'markerHeight="8" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="{fill}"/></marker>'
        for fam, fill in HEAD_FILL.items()
    )
    return f"<defs>{markers}</defs>"


def model_id(prefix: str) -> str:
    """An XML-id-safe form of ``prefix``."""
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in prefix) or "sf"
