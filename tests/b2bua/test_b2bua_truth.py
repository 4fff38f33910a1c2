"""The truth file written as calls end (TruthStream) equals the one written from memory.

The same calls (seeded ids, time passed in) run twice through the core: once keeping
ended calls in ``finished`` (regen's way), once handing them to a
:class:`~sipflow.b2bua.truth.TruthStream` (``sipflow b2bua``'s way, so a long run keeps no
ended call). Both truth files must be the same document.
"""

from __future__ import annotations

import json
from pathlib import Path

from test_b2bua_core import A, B, answer, invite, sends
from test_b2bua_transfer import SDP_C, C, answered, core

from sipflow.b2bua import truth
from sipflow.b2bua.core import B2BUA, LINGER
from sipflow.ingest.types import Transport
from sipflow.sip.message import SipRequest
from sipflow.sip.transaction import MS


def _run(c: B2BUA) -> None:
    """A transferred call, a busy call, and one left ringing (open at the end)."""
    call = answered(c)
    cinv = call.refer(20 * MS)[2][1]
    assert isinstance(cinv, SipRequest)
    c.receive(answer(cinv, 200, "OK", tag="ctag", body=SDP_C), C, Transport.UDP, 30 * MS)
    call.bye_from_b(40 * MS)
    call.bye_from_a(50 * MS)
    busy_inv = invite(call_id="busy@x").replace(b"z9hG4bKaaa1", b"z9hG4bKbusy")
    busy = sends(c.receive(busy_inv, A, Transport.UDP, 60 * MS))[1][1]
    assert isinstance(busy, SipRequest)
    c.receive(answer(busy, 486, "Busy Here"), B, Transport.UDP, 70 * MS)
    c.expire(80 * MS + LINGER)  # the ended calls are forgotten (and unlinked when streamed)
    ringing = invite(call_id="ringing@x").replace(b"z9hG4bKaaa1", b"z9hG4bKring")
    c.receive(ringing, A, Transport.UDP, 90 * MS + LINGER)


def test_streamed_truth_equals_the_truth_from_memory(tmp_path: Path) -> None:
    kept = core()
    _run(kept)
    want = truth.truth_dict(kept.finished + list(kept.calls.values()), [5061])
    streamed = core()
    stream = truth.TruthStream(tmp_path / "t.json")
    streamed.on_finished = stream.add
    _run(streamed)
    assert streamed.finished == [] and stream.count == 2
    stream.close(streamed.finished + list(streamed.calls.values()), [5061])
    got = json.loads((tmp_path / "t.json").read_text())
    assert got == json.loads(json.dumps(want))
    assert [c["outcome"] for c in got["calls"]] == ["answered", "busy", "in-progress"]
    assert len(got["calls"][0]["call_ids"]) == 3
    assert not stream.part.exists()
