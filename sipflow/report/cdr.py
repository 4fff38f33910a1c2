"""CDR rows (one per call) and KPIs over them, with small inline SVG plots.

How this works: :func:`cdr_rows` gives one row per call story (``trace.calls``: the legs
of one call through B2BUAs, tied by leg correlation, are one call). A row takes times,
outcome, codes and media from the first leg (the caller's view, as ``trace.calls`` does)
and sums counts over the legs; the Reason header (RFC 3326) and RTP statistics headers
are read from every leg's messages when the records kept their transactions. The columns
are :data:`CDR_COLUMNS`, documented in docs/reports.md. :func:`kpis` computes over rows
(no Trace needed, so it works on a CDR read back from disk):

- ASR: answered / attempts (ITU-T E.411 answer-seizure ratio).
- NER: (answered + busy 486/600 + decline 603 + no answer 480 + cancelled 487) / attempts,
  the E.425 idea that user behaviour is not a network failure, mapped onto SIP codes.
- SER and SEER as RFC 6076 §4.5/§4.6 define them (3xx-redirected attempts excluded).
- ACD: mean duration of answered calls. PDD: INVITE to first 18x (RFC 6076 §4.1 SRD)
  p50/p95; setup time: INVITE to 2xx p50/p95 (linear-interpolated percentiles).
- final response codes, outcomes and calls started per minute.

Plots are hand-written SVG (no plotting dependency), safe to inline in HTML.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sipflow.report.story import Stories
from sipflow.rtp.dtmf import call_digits
from sipflow.sip.message import SipMessage, SipRequest, SipResponse

if TYPE_CHECKING:
    from sipflow.correlate.calls import CallRecord
    from sipflow.sdp.media import CallMedia
    from sipflow.trace import Trace

NS = 1_000_000_000
CDR_COLUMNS = (
    "index", "call_id", "call_ids", "caller", "callee", "request_uri",
    "start", "answer", "end", "outcome", "final_code", "final_reason",
    "q850_cause", "q850_text", "sip_reason", "setup_ms", "pdd_ms", "duration_s", "ended_by",
    "codec", "media", "srtp", "srtp_suite", "hops", "legs", "messages", "retransmissions",
    "auth_challenges", "findings", "rtp_stat", "rtp_lost", "rtp_jitter_ms", "dtmf",
)  # fmt: skip
"""Columns of a CDR row, in order (see docs/reports.md)."""
NER_CODES = frozenset({200, 480, 486, 487, 600, 603})
SEER_CODES = frozenset({200, 480, 486, 600, 603})  # RFC 6076 §4.6
RTP_STAT_HEADERS = ("P-RTP-Stat", "X-RTP-Stat", "RTP-RxStat")
_REASON = re.compile(r"^\s*(?P<proto>[\w.]+)\s*(?P<params>(;[^;]*)*)$")
_PARAM = re.compile(r'\s*;\s*(?P<k>[\w-]+)\s*=\s*(?P<v>"[^"]*"|[^;]*)')


# -- CDR rows ---------------------------------------------------------------------------------


def _iso(ns: int | None) -> str | None:
    if ns is None:
        return None
    return datetime.fromtimestamp(ns / NS, UTC).isoformat(timespec="microseconds")


def _messages(call: CallRecord) -> list[SipMessage]:
    return sorted((m for tx in call.transactions for m in tx.messages), key=lambda m: m.ts)


def parse_reason(value: str) -> dict[str, str]:
    """``Q.850;cause=16;text="Normal"`` -> {"protocol": "Q.850", "cause": "16", ...}."""
    found = _REASON.match(value)
    if found is None:
        return {}
    out = {"protocol": found["proto"]}
    for p in _PARAM.finditer(found["params"] or ""):
        out[p["k"].lower()] = p["v"].strip().strip('"')
    return out


def _reasons(msgs: list[SipMessage]) -> tuple[dict[str, str], dict[str, str]]:
    """The first Q.850 and the first SIP Reason (RFC 3326 §2) of a BYE, CANCEL or final."""
    q850: dict[str, str] = {}
    sip: dict[str, str] = {}
    for m in msgs:
        ending = isinstance(m, SipResponse) and m.status >= 300
        ending = ending or (isinstance(m, SipRequest) and m.method in ("BYE", "CANCEL"))
        if not ending:
            continue
        for value in m.headers.get_all("Reason"):
            r = parse_reason(value)
            proto = r.get("protocol", "").upper()
            if proto == "Q.850" and not q850:
                q850 = r
            elif proto == "SIP" and not sip:
                sip = r
    return q850, sip


def parse_rtp_stat(value: str) -> dict[str, str]:
    """``PS=1,OS=2,PL=0,JI=3`` (comma or semicolon separated ``key=value``) as a dict."""
    out: dict[str, str] = {}
    for part in re.split(r"[,;]", value):
        if "=" in part:
            k, v = part.split("=", 1)
            out[k.strip().upper()] = v.strip()
    return out


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _rtp_stat(msgs: list[SipMessage]) -> tuple[str | None, int | None, float | None]:
    for m in msgs:
        for name in RTP_STAT_HEADERS:
            value = m.headers.get(name)
            if value:
                stat = parse_rtp_stat(value)
                jitter = _int(stat.get("JI"))
                return value, _int(stat.get("PL")), float(jitter) if jitter is not None else None
    return None, None, None


def _media(media: CallMedia | None) -> tuple[str | None, str | None, str | None, str | None]:
    """(codec, summary, srtp method, srtp suite) of the exchange the summary comes from."""
    if media is None or not media.exchanges:
        return None, None, None, None
    near = [x for x in media.exchanges if x.nearest] or list(media.exchanges)
    answered = [x for x in near if x.status == "answered"]
    pick = answered[-1] if answered else near[-1]
    lines = [ln for ln in pick.lines if not ln.rejected] or list(pick.lines)
    if not lines:
        return None, media.summary or None, None, None
    first = lines[0]
    codec = first.codecs[0].label if first.codecs else None
    suite = first.crypto.suite if first.crypto else None
    return codec, media.summary or None, first.srtp.value, suite


def cdr_row(trace: Trace, index: int, stories: Stories | None = None) -> dict[str, Any]:
    """The CDR row of call story ``index`` (a row of ``trace.calls``; columns
    :data:`CDR_COLUMNS`)."""
    st = stories or Stories(trace)
    members = st.groups[index]
    legs = [trace.call_records[i] for i in members]
    call = legs[0]
    media = trace.call_media[members[0]] if members[0] < len(trace.call_media) else None
    msgs = sorted((m for c in legs for m in _messages(c)), key=lambda m: m.ts)
    q850, sip = _reasons(msgs)
    stat, lost, jitter = _rtp_stat(msgs)
    codec, summary, srtp, suite = _media(media)
    story = st.of(members[0])
    n_findings = sum(len(c.findings) for c in legs) + sum(
        len(trace.call_media[i].findings) for i in members if i < len(trace.call_media)
    )
    return {
        "index": index,
        "call_id": call.call_ids[0] if call.call_ids else None,
        "call_ids": ";".join(story.call_ids),
        "caller": call.caller,
        "callee": call.callee,
        "request_uri": call.request_uri,
        "start": _iso(call.start),
        "answer": _iso(call.answer),
        "end": _iso(call.end),
        "outcome": call.outcome.value,
        "final_code": call.final_code,
        "final_reason": call.final_reason,
        "q850_cause": _int(q850.get("cause")),
        "q850_text": q850.get("text"),
        "sip_reason": _int(sip.get("cause")),
        "setup_ms": call.setup_ms,
        "pdd_ms": call.pdd_ms,
        "duration_s": call.duration_s,
        "ended_by": call.ended_by.value,
        "codec": codec,
        "media": summary,
        "srtp": srtp,
        "srtp_suite": suite,
        "hops": len({h for c in legs for h in c.hops}),
        "legs": len(story.call_ids),
        "messages": sum(c.messages for c in legs),
        "retransmissions": sum(c.retransmissions for c in legs),
        "auth_challenges": sum(c.auth_challenges for c in legs),
        "findings": n_findings,
        "rtp_stat": stat,
        "rtp_lost": lost,
        "rtp_jitter_ms": jitter,
        "dtmf": _dtmf(trace, members),
    }


def _dtmf(trace: Trace, members: list[int]) -> str | None:
    """The story's DTMF digits (RFC 4733 and SIP INFO) as its first leg with any saw them."""
    for i in members:
        rtp = trace.call_rtp_digits[i] if i < len(trace.call_rtp_digits) else []
        digits = call_digits(rtp, trace.call_records[i].info_digits)
        if digits:
            return digits
    return None


def cdr_rows(trace: Trace) -> list[dict[str, Any]]:
    """One row per call story (as ``trace.calls``), in start order."""
    stories = Stories(trace)
    return [cdr_row(trace, i, stories) for i in range(len(stories.groups))]


def write_cdr(rows: list[dict[str, Any]], path: str | Path) -> str:
    """Write rows as CSV, JSON or Parquet, chosen by the file suffix; returns the format."""
    p = Path(path)
    suffix = p.suffix.lower()
    p.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".csv":
        p.write_text(cdr_csv(rows), encoding="utf-8")
    elif suffix == ".json":
        doc = {"columns": list(CDR_COLUMNS), "rows": rows}
        p.write_text(json.dumps(doc, ensure_ascii=False) + "\n", encoding="utf-8")
    elif suffix == ".parquet":
        import pandas as pd  # imported here: only Parquet output needs it (and pyarrow)

        pd.DataFrame(rows, columns=list(CDR_COLUMNS)).to_parquet(p, index=False)
    else:
        raise ValueError(f"unknown CDR format {suffix!r}: use .csv, .json or .parquet")
    return suffix[1:]


def cdr_csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(CDR_COLUMNS), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


# -- KPIs -------------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float | None:
    """Linear-interpolated percentile (numpy's default), ``q`` in 0..100; None when empty."""
    if not values:
        return None
    s = sorted(values)
    pos = (len(s) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def _ratio(num: int, den: int) -> float | None:
    return round(100 * num / den, 2) if den else None


@dataclass(frozen=True)
class Kpis:
    """Call KPIs; ratios in percent, None where there is nothing to divide by."""

    attempts: int
    answered: int
    asr: float | None
    ner: float | None
    ser: float | None
    seer: float | None
    acd_s: float | None
    pdd_p50_ms: float | None
    pdd_p95_ms: float | None
    setup_p50_ms: float | None
    setup_p95_ms: float | None
    codes: dict[str, int]
    outcomes: dict[str, int]
    per_minute: list[tuple[str, int]] = field(default_factory=list)
    """(minute start ``YYYY-MM-DD HH:MM`` UTC, calls started), every minute first to last."""
    peak_cpm: int = 0
    mean_cpm: float | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["per_minute"] = [list(p) for p in self.per_minute]
        return d


def _minute_of(iso: str) -> int:
    return int(datetime.fromisoformat(iso).timestamp()) // 60  # ISO with offset: UTC-exact


def _per_minute(rows: list[dict[str, Any]]) -> list[tuple[str, int]]:
    counts = Counter(_minute_of(r["start"]) for r in rows if r.get("start"))
    if not counts:
        return []
    first, last = min(counts), max(counts)
    return [
        (datetime.fromtimestamp(m * 60, UTC).strftime("%Y-%m-%d %H:%M"), counts.get(m, 0))
        for m in range(first, last + 1)
    ]


def _values(rows: list[dict[str, Any]], name: str) -> list[float]:
    return [float(r[name]) for r in rows if r.get(name) is not None]


def kpis(rows: list[dict[str, Any]]) -> Kpis:
    """KPIs over CDR rows (see the module note for the definitions)."""
    attempts = len(rows)
    codes = Counter(str(r["final_code"]) if r["final_code"] else "none" for r in rows)
    answered = sum(1 for r in rows if r["outcome"] == "answered")
    final = [r["final_code"] for r in rows]
    redirected = sum(1 for c in final if c and 300 <= c < 400)
    ner_n = sum(1 for r in rows if r["outcome"] == "answered" or r["final_code"] in NER_CODES)
    seer_n = sum(1 for r in rows if r["outcome"] == "answered" or r["final_code"] in SEER_CODES)
    durations = [float(r["duration_s"]) for r in rows if r["outcome"] == "answered"]
    durations = [d for d in durations if d is not None and not math.isnan(d)]
    pdd, setup = _values(rows, "pdd_ms"), _values(rows, "setup_ms")
    per_minute = _per_minute(rows)
    return Kpis(
        attempts=attempts,
        answered=answered,
        asr=_ratio(answered, attempts),
        ner=_ratio(ner_n, attempts),
        ser=_ratio(answered, attempts - redirected),
        seer=_ratio(seer_n, attempts - redirected),
        acd_s=round(sum(durations) / len(durations), 3) if durations else None,
        pdd_p50_ms=_round(percentile(pdd, 50)),
        pdd_p95_ms=_round(percentile(pdd, 95)),
        setup_p50_ms=_round(percentile(setup, 50)),
        setup_p95_ms=_round(percentile(setup, 95)),
        codes=dict(sorted(codes.items())),
        outcomes=dict(Counter(r["outcome"] for r in rows).most_common()),
        per_minute=per_minute,
        peak_cpm=max((n for _, n in per_minute), default=0),
        mean_cpm=round(attempts / len(per_minute), 2) if per_minute else None,
    )


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 3)


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}%"


def _num(v: float | None, unit: str) -> str:
    return "-" if v is None else f"{v:.1f} {unit}"


def kpi_lines(k: Kpis) -> list[str]:
    """The KPIs as plain text lines (``sipflow cdr --summary``)."""
    codes = ", ".join(f"{c} x{n}" for c, n in k.codes.items()) or "-"
    outcomes = ", ".join(f"{o} x{n}" for o, n in k.outcomes.items()) or "-"
    return [
        f"Calls {k.attempts}, answered {k.answered}",
        f"ASR {_pct(k.asr)}  NER {_pct(k.ner)}  SER {_pct(k.ser)}  SEER {_pct(k.seer)}",
        f"ACD {_num(k.acd_s, 's')}",
        f"PDD p50 {_num(k.pdd_p50_ms, 'ms')}  p95 {_num(k.pdd_p95_ms, 'ms')}",
        f"Setup p50 {_num(k.setup_p50_ms, 'ms')}  p95 {_num(k.setup_p95_ms, 'ms')}",
        f"Calls per minute: peak {k.peak_cpm}, mean {k.mean_cpm if k.mean_cpm is not None else '-'}"
        f" over {len(k.per_minute)} min",
        f"Final codes: {codes}",
        f"Outcomes: {outcomes}",
    ]


# -- inline SVG plots -------------------------------------------------------------------------


def bar_svg(items: list[tuple[str, float]], title: str, width: int = 420, height: int = 180) -> str:
    """A column chart: one bar per (label, value); labels thinned when crowded."""
    top, bottom, left = 22, 34, 36
    plot_h = height - top - bottom
    peak = max((v for _, v in items), default=0) or 1
    step = (width - left - 8) / max(1, len(items))
    every = max(1, math.ceil(len(items) / 12))
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="sf-plot" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img">',
        f"<title>{escape(title)}</title>",
        f'<text x="{left}" y="14" font-size="12" font-weight="600">{escape(title)}</text>',
        f'<text x="{left - 4}" y="{top + 8}" font-size="10" text-anchor="end">{peak:g}</text>',
        f'<line x1="{left}" y1="{top + plot_h}" x2="{width - 8}" y2="{top + plot_h}" '
        'stroke="#9aa5b1"/>',
    ]
    for i, (label, value) in enumerate(items):
        h = plot_h * value / peak
        x = left + i * step
        out.append(
            f'<rect class="bar" x="{x + step * 0.1:.1f}" y="{top + plot_h - h:.1f}" '
            f'width="{max(1.0, step * 0.8):.1f}" height="{h:.1f}" fill="#1f6feb">'
            f"<title>{escape(label)}: {value:g}</title></rect>"
        )
        if i % every == 0:
            out.append(
                f'<text x="{x + step / 2:.1f}" y="{top + plot_h + 14}" font-size="10" '
                f'text-anchor="middle">{escape(label[-5:] if len(label) > 8 else label)}</text>'
            )
    out.append("</svg>")
    return "".join(out)


def histogram(values: list[float], bins: int = 12) -> list[tuple[str, float]]:
    """Equal-width bins over the values' range, labelled by their lower edge."""
    if not values:
        return []
    lo, hi = min(values), max(values)
    width = (hi - lo) / bins or 1
    counts = [0] * bins
    for v in values:
        counts[min(bins - 1, int((v - lo) / width))] += 1
    return [(f"{lo + i * width:.3g}", float(n)) for i, n in enumerate(counts)]


def kpi_plots(rows: list[dict[str, Any]], k: Kpis) -> dict[str, str]:
    """SVG plots: final codes, calls per minute, PDD histogram."""
    return {
        "codes": bar_svg([(c, float(n)) for c, n in k.codes.items()], "Final response codes"),
        "per_minute": bar_svg([(m, float(n)) for m, n in k.per_minute], "Calls started per minute"),
        "pdd": bar_svg(histogram(_values(rows, "pdd_ms")), "PDD (ms), calls per bin"),
    }
