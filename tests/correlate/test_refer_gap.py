"""Transfers: how soon the referred INVITE follows its REFER (issue 7).

Two blind transfers (RFC 3515) at once to the same user: both transferors' REFERs name
``carol`` and the B2BUA's two INVITEs to carol carry Referred-By, so Refer-To and
Referred-By cannot tell which transfer each new leg belongs to. The referee acts on a
REFER at once (202, then the INVITE), so the REFER nearest before the INVITE wins
(``refer_gap``). Checked on leg facts that differ only in those times, and on a run of the
reference B2BUA with two overlapping transfers to one user (its truth JSON is the oracle).
"""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import pytest
from truth import load_truth
from truth import score as truth_score

from sipflow.api import Options, analyze
from sipflow.b2bua.scenarios import SCENARIOS, _run
from sipflow.b2bua.ua import PlannedCall
from sipflow.b2bua.wire import WireEvidence
from sipflow.correlate.evidence import Leg, rule_refer_gap
from sipflow.correlate.legs import HopTimes, LegFacts, correlate, facts_of
from sipflow.correlate.normalise import DEFAULT_PLAN

MS = 1_000_000
T0 = 1_700_000_000 * 1_000_000_000
P = ("192.0.2.20", 5060)  # the B2BUA
BOB = ("192.0.2.30", 5060)
CAROL = ("192.0.2.40", 5060)


def _leg(cid: str, dst: tuple[str, int], at_ms: float, to: str, **extra: object) -> LegFacts:
    t = T0 + int(at_ms * MS)
    hop = HopTimes(P, dst, t, t + 50 * MS, t + 900 * MS, 200)
    fields: dict[str, object] = dict(
        call_id=cid, call_ids=(cid,), start=t, near=hop, far=hop, answer=t + 900 * MS,
        end=None, outcome="answered", final_code=200, from_user="alice", to_user=to,
        ruri_user=to, from_tag=f"tag-{cid}", cseq=1,
    )  # fmt: skip
    fields.update(extra)
    return LegFacts(**fields)  # type: ignore[arg-type]


def _two_transfers(second_ms: float) -> list[LegFacts]:
    """bob-1 and bob-2 answered, then each REFERs to carol; the B2BUA INVITEs carol 2 ms
    after each REFER. Nothing else tells the two transfers apart."""
    legs = []
    for n, refer_ms in ((1, 0.0), (2, second_ms)):
        refer = ("carol", None, T0 + int(refer_ms * MS))
        legs.append(_leg(f"bob-{n}", BOB, -5000 + n, "bob", refers=(refer,)))
        legs.append(_leg(f"carol-{n}", CAROL, refer_ms + 2, "carol", referred_by="bob"))
    return sorted(legs, key=lambda f: f.start)


def test_gap_weight_falls_with_the_gap() -> None:
    legs = _two_transfers(150.0)
    view = {f.call_id: Leg.of(i, f, DEFAULT_PLAN, {}) for i, f in enumerate(legs)}
    near = rule_refer_gap(view["bob-2"], view["carol-2"], DEFAULT_PLAN)
    far = rule_refer_gap(view["bob-1"], view["carol-2"], DEFAULT_PLAN)
    assert near is not None and far is not None
    assert near.weight == 3.0  # 2 ms
    assert 0.0 < far.weight < 1.0  # 152 ms: ln(250/152)
    assert rule_refer_gap(view["bob-2"], view["carol-1"], DEFAULT_PLAN) is None  # INVITE first


@pytest.mark.parametrize("second_ms", [60.0, 150.0, 900.0])
def test_the_nearest_refer_wins(second_ms: float) -> None:
    legs = _two_transfers(second_ms)
    corr = correlate(legs)
    ids = [f.call_id for f in legs]
    parent = {ids[link.b]: ids[link.a] for link in corr.links}
    assert parent == {"carol-1": "bob-1", "carol-2": "bob-2"}
    for link in corr.links:
        assert corr.roles[link.b] == "transfer"
        assert link.confidence >= 0.9, link
        assert any(e.rule == "refer_gap" and e.weight > 0 for e in link.evidence)
    assert not [f for f in corr.findings if f.code == "correlate.ambiguous"]


@pytest.mark.timeout(60)
def test_two_overlapping_transfers_to_one_user_through_the_b2bua(tmp_path: Path) -> None:
    calls = (PlannedCall("transfer", 0, 2000), PlannedCall("transfer-2", 40, 2000))
    sc = dataclasses.replace(SCENARIOS["transfer"], calls=calls)
    out = tmp_path / "two-transfers.pcap"
    with WireEvidence(out, False) as wire:
        result = asyncio.run(_run(sc, out, tmp_path, 4, wire))
    assert result.outcomes == {"answered": 2}
    truth = load_truth(result.truth)
    assert all(len(c) == 3 for c in truth)
    for path in (result.pcap, result.log):
        t = analyze([path], Options(keep_messages=False))
        legs = [facts_of(c, m) for c, m in zip(t.call_records, t.call_media, strict=True)]
        targets = {f.to_user for f in legs if f.referred_by}
        assert targets == {"answer-carol"}, "both transfers go to one user"
        corr = correlate(legs, t.channel_event_list)
        s = truth_score(truth, corr, legs)
        assert s.correct == s.legs == 6 and not s.wrong_links, (path.name, s)
        refer_links = [k for k in corr.links if k.rule == "refer"]
        assert len(refer_links) == 2
        for link in refer_links:
            gap = next(e for e in link.evidence if e.rule == "refer_gap")
            assert gap.weight > 0, gap
