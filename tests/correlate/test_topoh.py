"""Kamailio 5.6 with topoh masking Call-IDs between a SIPp UAC and UAS on loopback: the
two sides of every call carry different Call-IDs and must be paired, every one of them.

Truth comes from the peers, not from sipflow: the UAC puts its Call-ID in an X-Truth
header (not one of the correlation headers), and the UAS's message log shows, for each
INVITE it received, the masked Call-ID next to it. Many calls overlap (same numbers, same
SDP, same timing), so the pairing has to come from the evidence, not from order.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from peers import harness
from peers.harness import PeerError, Run, Scenario, missing_tools, run_scenario
from truth import score

from sipflow.api import Options, analyze
from sipflow.correlate.legs import correlate, facts_of

pytestmark = pytest.mark.peers

HERE = Path(__file__).resolve().parent / "topoh"
CALLS = 40

SCENARIO = Scenario(
    "topoh_overlap",
    str(HERE / "uac_truth.xml"),  # an absolute path: the harness joins it unchanged
    "uas_answer.xml",
    calls=CALLS,
    rate=80,
    proxy=True,
    pause_ms=400,  # ~30 calls up at once
)


@pytest.fixture(scope="module")
def topoh_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    missing = missing_tools(("sipp", "tcpdump", "kamailio"))
    if missing:
        pytest.skip(f"real peers not installed: {', '.join(missing)}")
    if os.geteuid() != 0:
        pytest.skip("capturing on lo with tcpdump needs root")
    saved = harness.KAMAILIO_CFG
    harness.KAMAILIO_CFG = HERE / "kamailio_topoh.cfg.in"
    try:
        return run_scenario(SCENARIO, tmp_path_factory.mktemp("topoh"))
    except PeerError as e:
        pytest.fail(f"topoh scenario: {e}")
    finally:
        harness.KAMAILIO_CFG = saved


_INVITE = re.compile(r"^INVITE .*?(?=\n\s*\n)", re.M | re.S)


def truth_of(run: Run) -> list[list[str]]:
    """[UAC Call-ID, masked Call-ID at the UAS] per call, from the UAS's message log."""
    text = (run.workdir / "uas_msg.log").read_text(errors="replace")
    pairs: dict[str, str] = {}
    for block in _INVITE.findall(text):
        cid = re.search(r"^(?:Call-ID|i):\s*(\S+)", block, re.M | re.I)
        orig = re.search(r"^X-Truth:\s*(\S+)", block, re.M | re.I)
        if cid and orig:
            pairs[orig.group(1)] = cid.group(1)
    return [[a, b] for a, b in pairs.items()]


def test_topoh_masks_call_ids(topoh_run: Run) -> None:
    truth = truth_of(topoh_run)
    assert len(truth) == CALLS
    assert all(a != b for a, b in truth), "topoh did not mask the Call-ID"
    assert topoh_run.uac.stat("SuccessfulCall") == CALLS


def test_topoh_legs_are_paired(topoh_run: Run) -> None:
    t = analyze([topoh_run.pcap], Options(keep_messages=False))
    legs = [facts_of(c, m) for c, m in zip(t.call_records, t.call_media, strict=True)]
    assert len(legs) == 2 * CALLS
    corr = correlate(legs)
    result = score([frozenset(c) for c in truth_of(topoh_run)], corr, legs)
    assert result.legs == 2 * CALLS
    assert result.ratio == 1.0, f"{result.correct}/{result.legs} legs paired correctly"
    assert not result.wrong_links
    assert len(corr.links) == CALLS
    for link in corr.links:
        assert link.confidence >= 0.9
        assert corr.roles[link.b] == "hop 2"  # the same dialog one proxy hop on
        assert {e.rule for e in link.evidence if e.weight > 0} >= {"same_dialog", "hop"}
