"""The truth file of a B2BUA run: which leg Call-IDs make up which call, and how it ended.

How this works: the core keeps every finished :class:`~sipflow.b2bua.core.Call`;
:func:`truth_dict` lists them (format in docs/b2bua.md): per call its uuid, the A-leg
Call-ID, the B-leg Call-IDs (one per INVITE dialog attempt; an auth retry keeps the
Call-ID), outcome (the vocabulary of ``sipflow analyze``), final code, times (ns) and
who hung up. Ports that carried TLS (written to the pcap as cleartext TCP) are listed.
"""

from __future__ import annotations

import json
from typing import Any

from sipflow.b2bua.core import Call

FORMAT = "sipflow-b2bua-truth/1"


def call_dict(call: Call) -> dict[str, Any]:
    a, b = call.a, call.b
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
                "call_id": cid,
                "uuid": b.uuid if b else None,
                "transport": b.transport.value if b else None,
                "peer": str(b.peer) if b else None,
                "auth_retries": b.auth_tries if b else 0,
            }
            for cid in call.b_call_ids
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
