"""pandas DataFrames of a Trace (imported only when a DataFrame is asked for).

How this works: each ``*_frame`` function turns the Trace's plain records into one
DataFrame with documented columns; timestamps become timezone-aware UTC datetimes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pandas as pd

from sipflow.sip.message import SipMessage, SipRequest

if TYPE_CHECKING:
    from sipflow.sip.transaction import TransactionRecord
    from sipflow.trace import Trace


def _utc(ns: int | None) -> pd.Timestamp | None:
    return None if ns is None else pd.Timestamp(ns, unit="ns", tz="UTC")


def _text(value: Any) -> Any:
    """Header text keeps undecodable bytes as surrogates (lossless parsing); pandas/Arrow
    strings must be valid UTF-8, so show such bytes as ``\\xNN``."""
    if isinstance(value, str) and not value.isascii():
        return value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return value


def _message_row(m: SipMessage) -> dict[str, Any]:
    return {k: _text(v) for k, v in _message_fields(m).items()}


def _message_fields(m: SipMessage) -> dict[str, Any]:
    o = m.origin
    cseq = m.cseq
    via = m.top_via
    is_req = isinstance(m, SipRequest)
    return {
        "ts": _utc(m.ts),
        "source": o.source if o else None,
        "frames": o.frames if o else (),
        "src": str(o.src) if o and o.src else None,
        "dst": str(o.dst) if o and o.dst else None,
        "transport": o.transport.value if o else None,
        "kind": "request" if is_req else "response",
        "method": m.method if isinstance(m, SipRequest) else (cseq.method if cseq else None),
        "status": None if isinstance(m, SipRequest) else m.status,
        "reason": None if isinstance(m, SipRequest) else m.reason,
        "request_uri": m.uri if isinstance(m, SipRequest) else None,
        "call_id": m.call_id,
        "cseq": cseq.seq if cseq else None,
        "from_tag": m.from_tag,
        "to_tag": m.to_tag,
        "branch": via.branch if via else None,
        "size": len(m.raw),
        "problems": "; ".join(m.problems),
    }


_MESSAGE_COLUMNS = [
    "ts", "source", "frames", "src", "dst", "transport", "kind", "method", "status", "reason",
    "request_uri", "call_id", "cseq", "from_tag", "to_tag", "branch", "size", "problems",
]  # fmt: skip


def messages_frame(trace: Trace) -> pd.DataFrame:
    return pd.DataFrame([_message_row(m) for m in trace.message_list], columns=_MESSAGE_COLUMNS)


def calls_frame(trace: Trace) -> pd.DataFrame:
    """One row per call story, as JSON ``calls[]`` (legs of one call through B2BUAs grouped;
    ``legs`` and ``media`` keep their nested form; ``trace.legs`` has one row per leg)."""
    rows = []
    for row in trace.call_dicts():
        for name in ("start", "answer", "end"):
            value = row[name]
            row[name] = None if value is None else pd.Timestamp(value, unit="s", tz="UTC")
        row["call_id"] = row["call_ids"][0] if row["call_ids"] else None
        rows.append(row)
    return pd.DataFrame(rows)


def findings_frame(trace: Trace) -> pd.DataFrame:
    rows = [
        {
            "code": f.code,
            "severity": f.severity.value,
            "message": f.message,
            "rfc": f.rfc,
            "frames": tuple(r.frame for r in f.refs),
            "sources": tuple(sorted({r.source for r in f.refs})),
        }
        for f in trace.finding_list
    ]
    return pd.DataFrame(rows, columns=["code", "severity", "message", "rfc", "frames", "sources"])


def _tx_row(tx: TransactionRecord, call_index: int | None) -> dict[str, Any]:
    src, dst = tx.hop
    return {
        "call": call_index,
        "call_id": tx.call_id,
        "method": tx.method,
        "kind": str(tx.kind.value) if hasattr(tx.kind, "value") else str(tx.kind),
        "branch": tx.branch,
        "cseq": tx.cseq,
        "src": str(src) if src else None,
        "dst": str(dst) if dst else None,
        "start": _utc(tx.first_ts),
        "end": _utc(tx.last_ts),
        "final_status": tx.final_status,
        "final_reason": tx.final_reason,
        "provisional": tx.provisional,
        "request_retransmissions": tx.request_retransmissions,
        "response_retransmissions": tx.response_retransmissions,
        "timed_out": tx.timed_out,
        "states": " > ".join(str(s.value) for _, s in tx.states),
        "messages": len(tx.messages),
    }


def transactions_frame(trace: Trace) -> pd.DataFrame:
    """Call transactions (``call`` = row of ``trace.calls``) then non-call ones (``call`` None)."""
    rows = [_tx_row(tx, i) for i, c in enumerate(trace.call_records) for tx in c.transactions]
    rows += [_tx_row(tx, None) for tx in trace.activity.records]
    return pd.DataFrame(rows)


def dialogs_frame(trace: Trace) -> pd.DataFrame:
    rows = [
        {
            "call": i,
            "call_id": d.id.call_id,
            "from_tag": d.id.caller_tag,
            "to_tag": d.id.callee_tag,
            "state": str(d.state.value),
            "created": _utc(d.created),
            "confirmed": _utc(d.confirmed),
            "ended": _utc(d.ended),
            "ended_why": d.ended_why,
            "bye_by": d.bye_by,
            "reinvites": d.reinvites,
            "states": " > ".join(str(s.value) for _, s in d.states),
        }
        for i, c in enumerate(trace.call_records)
        for d in c.dialogs
    ]
    return pd.DataFrame(rows)


def sdp_frame(trace: Trace) -> pd.DataFrame:
    from sipflow.checks.sdp import SDP_COLUMNS, sdp_rows

    rows = [r for i, m in enumerate(trace.call_media) for r in sdp_rows(i, m)]
    return pd.DataFrame(rows, columns=SDP_COLUMNS)


def rtp_streams_frame(trace: Trace) -> pd.DataFrame:
    from sipflow.rtp.mapping import RTP_COLUMNS, rtp_rows

    rows = [trace.story_stream(r) for r in rtp_rows(trace.rtp_stream_list)]
    return pd.DataFrame(rows, columns=[*RTP_COLUMNS, "call_id"])


def legs_frame(trace: Trace) -> pd.DataFrame:
    from sipflow.correlate.legs import legs_rows

    if trace.correlation is None:
        return pd.DataFrame()
    return pd.DataFrame(legs_rows(trace.correlation, trace.leg_facts))


def channel_events_frame(trace: Trace) -> pd.DataFrame:
    from sipflow.trace import event_to_dict

    rows = []
    for e in trace.channel_event_list:
        row = event_to_dict(e)
        row["ts"] = _utc(e.ts)
        ref = row.pop("ref")
        row["source"], row["line"] = ref["source"], ref["line"]
        rows.append(row)
    columns = ["ts", "channel", "uuid", "kind", "old", "new", "call_id", "peer", "link"]
    return pd.DataFrame(rows, columns=[*columns, "source", "line"])
