"""Plain-text summary, call table, activity and findings for a terminal.

How this works: pure functions from the JSON-shaped dict of a Trace (docs/json.md) to
lines of text; fixed-width columns, no colour, so the output can be pasted into tickets.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from typing import Any

MAX_FINDING_EXAMPLES = 3


def _time(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def _num(value: float | None, fmt: str = "{:.0f}") -> str:
    return "-" if value is None else fmt.format(value)


def _table(headers: list[str], rows: list[list[str]]) -> list[str]:
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    out = [line.rstrip(), "  ".join("-" * w for w in widths)]
    for row in rows:
        out.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return out


def summary_lines(doc: dict[str, Any]) -> list[str]:
    stats = doc["stats"]
    out = ["Sources"]
    for i, s in enumerate(doc["sources"]):
        skipped = ", ".join(f"{k} {v}" for k, v in s["skipped"].items()) or "none"
        out.append(
            f"  [{i}] {s['path']}  {s['format']}  {'/'.join(s['link_types']) or '-'}  "
            f"frames {s['frames']}  skipped: {skipped}"
            + (f"  duplicates {s['duplicates']}" if s["duplicates"] else "")
        )
    req = sum(stats["sip_requests"].values())
    resp = sum(stats["sip_responses"].values())
    transports = ", ".join(f"{k} {v}" for k, v in stats["transports"].items()) or "-"
    out += [
        f"SIP messages {stats['sip_messages']} ({req} requests, {resp} responses), "
        f"retransmissions {stats['retransmissions']}, malformed {stats['malformed']}",
        f"Transports: {transports}",
        f"Time span: {_time(stats['start'])} .. {_time(stats['end'])} UTC",
        f"Calls: {len(doc['calls'])}",
    ]
    return out


def call_lines(doc: dict[str, Any]) -> list[str]:
    headers = ["Call-ID", "From", "To", "Start (UTC)", "Outcome", "Code", "Reason",
               "Setup ms", "PDD ms", "Dur s", "Ended by", "Msgs", "Retx", "Media"]  # fmt: skip
    rows = []
    for c in doc["calls"]:
        cid = ",".join(c["call_ids"])
        rows.append([
            cid if len(cid) <= 40 else cid[:37] + "...",
            c["caller"] or "-", c["callee"] or "-", _time(c["start"]), c["outcome"],
            _num(c["final_code"], "{}"), c["final_reason"] or "-",
            _num(c["setup_ms"]), _num(c["pdd_ms"]), _num(c["duration_s"], "{:.1f}"),
            c["ended_by"], str(c["messages"]), str(c["retransmissions"]),
            (c.get("media") or {}).get("summary") or "-",
        ])  # fmt: skip
    return _table(headers, rows) if rows else ["(no calls)"]


def channel_lines(doc: dict[str, Any]) -> list[str]:
    """Each call's PBX channel state sequence (from logs), under the call's Call-ID."""
    out: list[str] = []
    for c in doc["calls"]:
        for ch in c.get("channels") or ():
            if not out:
                out = ["", "Channel states (PBX log)"]
            cid = ch.get("call_id") or c["call_ids"][0]
            out.append(f"  {cid}  {ch['channel']}  uuid {ch['uuid'] or '-'}")
            out.append("    " + ", ".join(ch["states"]))
    return out


def activity_lines(doc: dict[str, Any]) -> list[str]:
    if not doc["activity"]:
        return []
    rows = []
    for a in doc["activity"]:
        codes = ", ".join(f"{k} x{v}" for k, v in a["responses"].items())
        if a["no_final"]:
            codes += (", " if codes else "") + f"no final x{a['no_final']}"
        rows.append([a["method"], str(a["transactions"]), codes or "-", str(a["retransmissions"])])
    return [
        "",
        "Other activity (not calls)",
        *_table(["Method", "Transactions", "Final responses", "Retx"], rows),
    ]


def finding_lines(doc: dict[str, Any]) -> list[str]:
    findings = doc["findings"]
    if not findings:
        return ["", "Findings: none"]
    by_code: Counter[tuple[str, str]] = Counter((f["severity"], f["code"]) for f in findings)
    out = ["", f"Findings: {len(findings)}"]
    for (severity, code), n in sorted(by_code.items(), key=lambda kv: (-kv[1], kv[0])):
        examples = [f for f in findings if f["code"] == code][:MAX_FINDING_EXAMPLES]
        out.append(f"  {severity:<7} {code} x{n}")
        for f in examples:
            frames = ",".join(str(r["frame"]) for r in f["refs"][:5])
            where = f" [frames {frames}]" if frames else ""
            out.append(f"          {f['message']}{where}")
    return out


def render(doc: dict[str, Any]) -> str:
    lines = [
        *summary_lines(doc),
        "",
        *call_lines(doc),
        *channel_lines(doc),
        *activity_lines(doc),
        *finding_lines(doc),
    ]
    return "\n".join(lines) + "\n"
