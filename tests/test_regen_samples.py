"""The shipped regen samples (samples/pcaps/regen_*): the reference B2BUA's pcap and its
FreeSWITCH-style log of the same run give the same SIP messages and the same calls, and the
calls are the ones its truth JSON names (docs/b2bua.md)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import sipflow

SAMPLES = Path(__file__).resolve().parents[1] / "samples" / "pcaps"
SCENARIOS = sorted(p.stem.removeprefix("regen_") for p in SAMPLES.glob("regen_*.pcap"))


def _story(doc: dict) -> list[tuple]:
    return [(tuple(c["call_ids"]), c["outcome"], c["final_code"]) for c in doc["calls"]]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_pcap_and_log_of_one_run_agree(scenario: str) -> None:
    pcap = sipflow.analyze([SAMPLES / f"regen_{scenario}.pcap"])
    log = sipflow.analyze([SAMPLES / f"regen_{scenario}.log"])
    assert log.sources[0].format == "freeswitch"
    assert [m.raw for m in log.message_list] == [m.raw for m in pcap.message_list]
    assert _story(log.to_dict()) == _story(pcap.to_dict())
    for trace in (pcap, log):
        assert trace.malformed == 0


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_calls_are_the_ones_the_truth_names(scenario: str) -> None:
    truth = json.loads((SAMPLES / f"regen_{scenario}.truth.json").read_text())
    doc = sipflow.analyze([SAMPLES / f"regen_{scenario}.pcap"]).to_dict()
    want = [(tuple(c["call_ids"]), c["outcome"], c["final_code"]) for c in truth["calls"]]
    assert _story(doc) == want
