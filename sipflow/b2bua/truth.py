"""The truth file of a B2BUA run: which leg Call-IDs make up which call, and how it ended.

How this works: the core keeps every finished :class:`~sipflow.b2bua.core.Call` (or, in a
long run, hands each to a :class:`TruthStream` as it ends); :func:`truth_dict` lists them
(format in docs/b2bua.md): per call its uuid, the A-leg Call-ID, the B-leg Call-IDs (one
per INVITE dialog attempt; an auth retry keeps the Call-ID; a blind transfer's target leg
is one more, ``role: transfer``), the transfers (who referred, to what, the target's
final code), outcome (the vocabulary of ``sipflow analyze``), final code, times (ns) and
who hung up. Ports that carried TLS (written to the pcap as cleartext TCP) are listed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sipflow.b2bua.core import Call

FORMAT = "sipflow-b2bua-truth/1"


def call_dict(call: Call) -> dict[str, Any]:
    a = call.a
    return {
        "uuid": call.uuid,
        "a_leg": {
            "call_id": a.call_id if a else None,
            "uuid": a.uuid if a else None,
            "transport": a.transport.value if a else None,
            "peer": str(a.peer) if a else None,
        },
        "b_legs": [
            {
                "call_id": b.call_id,
                "uuid": b.uuid,
                "transport": b.transport.value,
                "peer": str(b.peer),
                "auth_retries": b.auth_tries,
                "role": "transfer" if b.referred is not None else "b-leg",
            }
            for b in call.b_legs
        ],
        "transfers": [
            {
                "by": x.by.call_id,
                "refer_to": x.refer_to,
                "referred_by": x.referred_by,
                "call_id": x.leg.call_id if x.leg else None,
                "final_code": x.final_code,
                "final_reason": x.final_reason,
            }
            for x in call.transfers
        ],
        "call_ids": [a.call_id, *list(call.b_call_ids)] if a else list(call.b_call_ids),
        "outcome": call.outcome,
        "final_code": call.final_code,
        "final_reason": call.final_reason,
        "start_ns": call.start,
        "answer_ns": call.answer,
        "end_ns": call.end,
        "ended_by": call.ended_by,
    }


def truth_dict(
    calls: list[Call], tls_ports: list[int], extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "calls": [call_dict(c) for c in sorted(calls, key=lambda c: c.start)],
        "tls_cleartext_ports": sorted(tls_ports),
        **(extra or {}),
    }


def dumps(calls: list[Call], tls_ports: list[int], extra: dict[str, Any] | None = None) -> str:
    return json.dumps(truth_dict(calls, tls_ports, extra), indent=2) + "\n"


class TruthStream:
    """The truth file of a long run, written without keeping calls in memory: each call
    is appended as one JSON line to ``<truth>.part`` when it ends (:meth:`add`, the
    core's ``on_finished``); :meth:`close` adds the calls still open, sorts by start and
    writes the truth file (same format as :func:`dumps`), then removes the part file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.part = self.path.with_name(self.path.name + ".part")
        self._fh = self.part.open("w")
        self.count = 0

    def add(self, call: Call) -> None:
        self._fh.write(json.dumps(call_dict(call), separators=(",", ":")) + "\n")
        self.count += 1

    def close(
        self, open_calls: list[Call], tls_ports: list[int], extra: dict[str, Any] | None = None
    ) -> None:
        self._fh.close()
        with self.part.open() as fh:
            calls = [json.loads(line) for line in fh]
        calls += [call_dict(c) for c in open_calls]
        calls.sort(key=lambda c: c["start_ns"])
        doc = {"format": FORMAT, "calls": calls, "tls_cleartext_ports": sorted(tls_ports)}
        self.path.write_text(json.dumps({**doc, **(extra or {})}, indent=2) + "\n")
        self.part.unlink()
