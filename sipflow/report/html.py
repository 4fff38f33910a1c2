"""The self-contained HTML report, and the HTML of a Trace or a call in Jupyter.

How this works: jinja2 renders ``reports/templates/*.j2``; the CSS and JS under
``reports/templates/static/`` are read and inlined, and the data travels as one JSON
document in a ``<script type="application/json">`` element, so the file makes no network
fetch. The call list is drawn by the page's script 100 rows at a time (filter, sort,
pages) and a call's SVG ladder is inserted only when the call is selected: the SVGs sit
in the JSON as strings and never all enter the DOM, which keeps a 5,000-call report
usable. Clicking an arrow shows that message with its headers highlighted.

Templates are found (first hit wins): ``$SIPFLOW_TEMPLATES``, the source tree's
``reports/templates`` (a checkout or an editable install), then
``<prefix>/share/sipflow/templates`` where the wheel's data-files put them.
"""

from __future__ import annotations

import base64
import gc
import gzip
import json
import os
import sys
import sysconfig
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sipflow.report import svg
from sipflow.report.cdr import cdr_rows, kpi_lines, kpi_plots, kpis
from sipflow.report.ladder import LadderModel, TraceIndex, build_ladder

if TYPE_CHECKING:
    import jinja2

    from sipflow.report.cdr import Kpis
    from sipflow.trace import Trace

PAGE_SIZE = 100
COMPRESS_ABOVE = 512 * 1024
"""Data larger than this (bytes of JSON) is gzip-compressed into the page."""
MAX_EXAMPLES = 3
NOTEBOOK_CALLS = 20
COLUMNS = (
    ("i", "#"), ("start", "Start (UTC)"), ("from", "From"), ("to", "To"),
    ("outcome", "Outcome"), ("code", "Code"), ("setup", "Setup ms"), ("pdd", "PDD ms"),
    ("dur", "Dur s"), ("msgs", "Msgs"), ("rtx", "Retx"), ("findings", "Findings"),
    ("media", "Media"), ("cid", "Call-ID"),
)  # fmt: skip


class TemplatesNotFound(FileNotFoundError):
    """No directory with the report templates was found (see the module note)."""


def template_dirs() -> list[Path]:
    """Where templates are looked for, in order."""
    out = []
    if os.environ.get("SIPFLOW_TEMPLATES"):
        out.append(Path(os.environ["SIPFLOW_TEMPLATES"]))
    out.append(Path(__file__).resolve().parents[2] / "reports" / "templates")
    for base in (sys.prefix, sysconfig.get_path("data")):
        out.append(Path(base) / "share" / "sipflow" / "templates")
    return out


@cache
def templates_dir() -> Path:
    for d in template_dirs():
        if (d / "report.html.j2").is_file():
            return d
    raise TemplatesNotFound("report templates not found in " + ", ".join(map(str, template_dirs())))


@cache
def _env() -> jinja2.Environment:
    import jinja2

    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir())),
        autoescape=True,
        trim_blocks=False,
        keep_trailing_newline=True,
    )


def _static(name: str) -> str:
    return (templates_dir() / "static" / name).read_text(encoding="utf-8")


def _script_json(doc: Any) -> str:
    """JSON safe inside ``<script>``: every ``<`` written as ``\\u003c``, so no ``</script>``
    or ``<!--`` can close or confuse the element (still valid JSON)."""
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).replace("<", "\\u003c")


def _payload(doc: Any, compress: bool | None) -> tuple[str, str]:
    """(encoding, text) of the data element: plain JSON, or gzip+base64 when it is big
    (SIP text and SVG shrink about tenfold; the page inflates it with the browser's
    DecompressionStream, no library and no fetch)."""
    text = json.dumps(doc, ensure_ascii=False, separators=(",", ":"))
    if compress is None:
        compress = len(text) > COMPRESS_ABOVE
    if not compress:
        return "json", text.replace("<", "\\u003c")  # as _script_json
    packed = gzip.compress(text.encode("utf-8"), compresslevel=6, mtime=0)
    return "gzip+base64", base64.b64encode(packed).decode("ascii")


# -- the report ------------------------------------------------------------------------------


def _ms(v: float | None) -> float | None:
    return None if v is None else round(v, 1)


def _call_entry(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "i": row["index"],
        "cid": row["call_ids"],
        "from": row["caller"],
        "to": row["callee"],
        "ruri": row["request_uri"],
        "start": (row["start"] or "")[:23].replace("T", " "),
        "outcome": row["outcome"],
        "code": row["final_code"],
        "setup": _ms(row["setup_ms"]),
        "pdd": _ms(row["pdd_ms"]),
        "dur": None if row["duration_s"] is None else round(row["duration_s"], 1),
        "msgs": row["messages"],
        "rtx": row["retransmissions"],
        "findings": row["findings"],
        "media": row["media"],
    }


def _info(model: LadderModel, row: dict[str, Any]) -> str:
    parts = [f"Call-ID {', '.join(model.call_ids)}", f"{len(model.arrows)} messages"]
    if model.retransmissions:
        parts.append(f"{model.retransmissions} retransmissions")
    if row["media"]:
        parts.append(f"media {row['media']}")
    if row["dtmf"]:
        parts.append(f"DTMF {row['dtmf']}")
    if row["q850_cause"] is not None:
        parts.append(f"Q.850 cause {row['q850_cause']} {row['q850_text'] or ''}".strip())
    parts += [f"leg {e}" for e in model.evidence]
    parts += [f"left out: {why} x{n}" for why, n in model.skipped.items()]
    return " · ".join(parts)


def _ladder_entry(model: LadderModel, row: dict[str, Any], i: int) -> dict[str, Any]:
    return {
        "svg": svg.render_svg(model, f"c{i}", style=False),
        "msgs": [a.text for a in model.arrows],
        "badges": [[[b.severity, b.code, b.message] for b in a.badges] for a in model.arrows],
        "info": _info(model, row),
    }


def _findings(trace: Trace) -> list[dict[str, Any]]:
    count: Counter[tuple[str, str]] = Counter()
    examples: dict[tuple[str, str], list[str]] = {}
    for f in trace.finding_list:
        key = (f.severity.value, f.code)
        count[key] += 1
        found = examples.setdefault(key, [])
        if len(found) < MAX_EXAMPLES:
            frames = ",".join(str(r.frame) for r in f.refs[:5])
            found.append(f.message + (f" [frames {frames}]" if frames else ""))
    order = sorted(
        count.items(), key=lambda kv: ({"error": 0, "warning": 1}.get(kv[0][0], 2), -kv[1])
    )
    return [
        {"severity": s, "code": c, "count": n, "examples": examples[(s, c)]} for (s, c), n in order
    ]


def _cards(k: Kpis) -> list[tuple[str, str, str]]:
    def pct(v: float | None) -> str:
        return "-" if v is None else f"{v:.1f}%"

    def ms(v: float | None) -> str:
        return "-" if v is None else f"{v:.0f} ms"

    return [
        ("Calls", str(k.attempts), f"{k.answered} answered"),
        ("ASR", pct(k.asr), "answered / attempts"),
        ("NER", pct(k.ner), "E.425 on SIP codes"),
        ("SEER", pct(k.seer), "RFC 6076 §4.6"),
        ("ACD", "-" if k.acd_s is None else f"{k.acd_s:.1f} s", ""),
        ("PDD p50", ms(k.pdd_p50_ms), f"p95 {ms(k.pdd_p95_ms)}"),
        ("Setup p50", ms(k.setup_p50_ms), f"p95 {ms(k.setup_p95_ms)}"),
        (
            "Calls/min",
            str(k.peak_cpm),
            f"peak; mean {k.mean_cpm if k.mean_cpm is not None else '-'}",
        ),
    ]


def _span(trace: Trace) -> str:
    if trace.start is None or trace.end is None:
        return "no messages"
    fmt = "%Y-%m-%d %H:%M:%S"
    a = datetime.fromtimestamp(trace.start / 1e9, UTC).strftime(fmt)
    b = datetime.fromtimestamp(trace.end / 1e9, UTC).strftime(fmt)
    return f"{a} .. {b} UTC"


Progress = Callable[[int, int], None]
PROGRESS_EVERY = 200


def report_data(
    trace: Trace, progress: Progress | None = None
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(CDR rows, the JSON document the page's script reads)."""
    # Many small objects, no cycles worth collecting: the cyclic collector walking the
    # trace's retained messages would cost more than the rendering (as in api.analyze).
    threshold = gc.get_threshold()
    gc.set_threshold(max(threshold[0], 200_000), threshold[1], threshold[2])
    try:
        return _report_data(trace, progress)
    finally:
        gc.set_threshold(*threshold)


def _report_data(
    trace: Trace, progress: Progress | None
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    rows = cdr_rows(trace)  # one per call story: its ladder draws every leg
    index = TraceIndex(trace)
    ladders = []
    for i, (row, members) in enumerate(zip(rows, index.stories.groups, strict=True)):
        ladders.append(_ladder_entry(build_ladder(trace, members[0], index), row, i))
        if progress is not None and (i % PROGRESS_EVERY == 0 or i == len(rows) - 1):
            progress(i + 1, len(rows))
    doc = {"page_size": PAGE_SIZE, "calls": [_call_entry(r) for r in rows], "ladders": ladders}
    return rows, doc


def render_report(
    trace: Trace,
    title: str | None = None,
    progress: Progress | None = None,
    compress: bool | None = None,
) -> str:
    """The whole report as one HTML document (no external resources). ``compress``:
    gzip the data (None: only when it is bigger than :data:`COMPRESS_ABOVE`)."""
    from sipflow import __version__

    rows, doc = report_data(trace, progress)
    encoding, payload = _payload(doc, compress)
    k = kpis(rows)
    sources = [s.to_dict() for s in trace.sources]
    name = title or "sipflow report: " + ", ".join(Path(str(s["path"])).name for s in sources)
    return (
        _env()
        .get_template("report.html.j2")
        .render(
            title=name,
            version=__version__,
            stats=trace.stats(),
            span=_span(trace),
            sources=sources,
            calls=rows,
            kpi_cards=_cards(k),
            plots=kpi_plots(rows, k),
            outcomes=sorted({r["outcome"] for r in rows}),
            columns=COLUMNS,
            activity=trace.activity.to_list(),
            findings=_findings(trace),
            findings_total=len(trace.finding_list),
            css=_static("report.css"),
            ladder_css=svg.STYLE,
            js=_static("report.js"),
            data_encoding=encoding,
            data=payload,
        )
    )


def write_report(
    trace: Trace,
    path: str | Path,
    title: str | None = None,
    progress: Progress | None = None,
    compress: bool | None = None,
) -> int:
    """Write the report; returns its size in bytes."""
    data = render_report(trace, title, progress, compress).encode("utf-8")
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    return len(data)


# -- Jupyter ---------------------------------------------------------------------------------


def call_html(model: LadderModel, id_prefix: str = "sfcall") -> str:
    """One call's ladder and messages as an HTML fragment (``_repr_html_``)."""
    return (
        _env()
        .get_template("call.html.j2")
        .render(
            model=model, svg=svg.render_svg(model, id_prefix, style=False), ladder_css=svg.STYLE
        )
    )


def trace_html(trace: Trace, limit: int = NOTEBOOK_CALLS) -> str:
    """A Trace as an HTML fragment: counts, KPIs and its first ``limit`` calls."""
    rows = cdr_rows(trace)
    return (
        _env()
        .get_template("trace.html.j2")
        .render(
            stats=trace.stats(),
            ncalls=len(rows),
            nfindings=len(trace.finding_list),
            kpi_lines=kpi_lines(kpis(rows)) if rows else [],
            columns=COLUMNS,
            calls=[_call_entry(r) for r in rows[:limit]],
        )
    )
