"""One ladder per call story: the legs of a B2BUA call (two Call-IDs) drawn together.

The shipped ``regen_*`` samples are real calls through sipflow's reference B2BUA on
loopback; their ``.truth.json`` names the A-leg and B-leg Call-IDs the B2BUA used, and
tshark counts the SIP messages of each Call-ID in the pcap. Every test here fails if the
B-leg is missing from the ladder, the report or the CDR.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from report_helpers import REGEN, REGEN_SCENARIOS, run_cli, tshark_fields

from sipflow.report.cdr import cdr_rows
from sipflow.report.html import render_report
from sipflow.report.ladder import LadderModel, TraceIndex, build_ladder, find_call
from sipflow.report.svg import render_svg
from sipflow.trace import Trace

SVG = "{http://www.w3.org/2000/svg}"
SOURCES = [f"regen_{s}.{ext}" for s in REGEN_SCENARIOS for ext in ("pcap", "log")]
LABELS = ["sipflow-uac", "sipflow-b2bua", "sipflow-uas"]


def _truth(name: str) -> dict[str, Any]:
    stem = name.rsplit(".", 1)[0]
    truth: dict[str, Any] = json.loads((REGEN / f"{stem}.truth.json").read_text())
    (call,) = truth["calls"]
    return dict(call)


def _per_call_id(name: str) -> Counter[str]:
    """SIP messages per Call-ID, by tshark on the pcap (the log records the same calls)."""
    pcap = REGEN / (name.rsplit(".", 1)[0] + ".pcap")
    return Counter(row[0] for row in tshark_fields(pcap, "sip", "sip.Call-ID"))


def _ladder(trace: Trace, call_id: str) -> LadderModel:
    index = find_call(trace, call_id)
    assert index is not None, call_id
    return build_ladder(trace, index)


@pytest.mark.parametrize("name", SOURCES)
def test_both_legs_in_one_ladder(name: str, regen_traces: dict[str, Trace]) -> None:
    trace = regen_traces[name]
    truth = _truth(name)
    a_leg, b_leg = truth["a_leg"]["call_id"], truth["b_legs"][0]["call_id"]
    model = _ladder(trace, a_leg)
    assert model.call_ids == tuple(truth["call_ids"]) == (a_leg, b_leg)
    counts = _per_call_id(name)
    assert Counter(a.call_id for a in model.arrows) == counts  # every message of both legs
    assert [lane.label for lane in model.lanes] == LABELS  # caller, B2BUA, callee
    for a in model.arrows:  # the A-leg between lanes 0 and 1, the B-leg between 1 and 2
        assert {a.src, a.dst} == ({0, 1} if a.call_id == a_leg else {1, 2}), a.label
    (note,) = model.legs
    assert (note.call_id, note.linked_to, note.role) == (b_leg, a_leg, "b-leg")
    assert note.rule not in ("", "none") and note.confidence is not None
    assert note.confidence >= 0.5  # CorrelateOptions.min_confidence: links below are dropped
    assert f"rule {note.rule}, confidence {note.confidence:.2f}" in model.evidence[0]
    # asked by the B-leg's Call-ID, the same story is drawn
    again = _ladder(trace, b_leg)
    assert again.call_ids == model.call_ids and len(again.arrows) == len(model.arrows)


@pytest.mark.parametrize("scenario", REGEN_SCENARIOS)
def test_log_channel_marks_on_the_b2bua_lane(scenario: str, regen_traces: dict[str, Trace]) -> None:
    """The log is the B2BUA's: both channels' state changes go on its lane (every host
    is 127.0.0.1 here, so the lane comes from the element, not the address)."""
    model = build_ladder(regen_traces[f"regen_{scenario}.log"], 0)
    assert model.marks
    assert {m.lane for m in model.marks} == {1}
    assert len({m.channel for m in model.marks}) == 2


def test_b2bua_sockets_merged_into_one_lane(regen_traces: dict[str, Trace]) -> None:
    """auth407: the B2BUA takes the call on TCP 56369-ish and sends the B-leg from its TLS
    client port; the correlation's hop (parent INVITE dst -> child INVITE src) makes them
    one lane, listed as an alias."""
    trace = regen_traces["regen_auth407.pcap"]
    model = build_ladder(trace, 0)
    facts = trace.leg_facts
    a_dst, b_src = facts[0].far.dst, facts[1].near.src
    assert a_dst is not None and b_src is not None and a_dst != b_src
    b2bua = model.lanes[1]
    assert b2bua.key == f"{a_dst[0]}:{a_dst[1]}"
    assert f"{b_src[0]}:{b_src[1]}" in b2bua.aliases


@pytest.mark.parametrize("name", ["regen_basic.pcap", "regen_auth407.pcap"])
def test_svg_has_both_legs_and_the_link(name: str, regen_traces: dict[str, Trace]) -> None:
    trace = regen_traces[name]
    model = build_ladder(trace, 0)
    root = ET.fromstring(render_svg(model))
    arrows = [g for g in root.iter(f"{SVG}g") if (g.get("class") or "").startswith("arrow")]
    assert len(arrows) == sum(_per_call_id(name).values()) == int(root.get("data-arrows") or 0)
    lanes = [g for g in root.iter(f"{SVG}g") if g.get("class") == "lane"]
    assert len(lanes) == 3
    (note,) = [g for g in root.iter(f"{SVG}g") if g.get("class") == "leg-note"]
    assert note.get("data-call-id") == model.call_ids[1]
    assert note.get("data-rule") == model.legs[0].rule
    assert float(note.get("data-confidence") or 0) == model.legs[0].confidence
    texts = [t.text or "" for t in note.iter(f"{SVG}text")]
    assert "b-leg of" in texts[0] and "confidence" in texts[1]


def test_html_report_one_call_two_legs(regen_traces: dict[str, Trace]) -> None:
    from test_html import _scan

    trace = regen_traces["regen_basic.pcap"]
    truth = _truth("regen_basic.pcap")
    _, data = _scan(render_report(trace))
    assert len(data["calls"]) == len(data["ladders"]) == 1  # one call story, not two rows
    (call,), (ladder,) = data["calls"], data["ladders"]
    assert call["cid"] == ";".join(truth["call_ids"])
    assert len(ladder["msgs"]) == sum(_per_call_id("regen_basic.pcap").values())
    assert {re.search(r"Call-ID: (\S+)", m)[1] for m in ladder["msgs"]} == set(truth["call_ids"])  # type: ignore[index]
    assert 'class="leg-note"' in ladder["svg"]
    assert "b-leg of" in ladder["info"] and "confidence" in ladder["info"]


@pytest.mark.parametrize("name", ["regen_basic.pcap", "regen_cancel.pcap"])
def test_cdr_one_row_per_call_story(name: str, regen_traces: dict[str, Trace]) -> None:
    trace = regen_traces[name]
    truth = _truth(name)
    (row,) = cdr_rows(trace)
    assert row["call_ids"].split(";") == truth["call_ids"]
    assert row["legs"] == 2
    assert row["messages"] == sum(_per_call_id(name).values())
    assert (row["outcome"], row["final_code"]) == (truth["outcome"], truth["final_code"])
    assert row["call_id"] == truth["a_leg"]["call_id"]  # the caller's view


def test_index_is_shared_by_every_story(regen_traces: dict[str, Trace]) -> None:
    trace = regen_traces["regen_hold.pcap"]
    index = TraceIndex(trace)
    a, b = build_ladder(trace, 0, index), build_ladder(trace, 1, index)
    assert a.call_ids == b.call_ids and [x.text for x in a.arrows] == [x.text for x in b.arrows]
    assert find_call(trace, "0") == 0 and find_call(trace, "1") is None  # one call story


def test_cli_ladder_by_a_leg_draws_both_legs() -> None:
    name = "regen_auth407.pcap"
    truth = _truth(name)
    run = run_cli("ladder", str(REGEN / name), "--call", truth["a_leg"]["call_id"])
    assert run.returncode == 0, run.stderr
    assert run.stderr == ""
    out = run.stdout
    assert f"Call-ID: {', '.join(truth['call_ids'])}" in out
    assert re.search(r"leg \S+: b-leg of \S+; rule \w+, confidence [01]\.\d\d", out)
    labels = next(ln for ln in out.splitlines() if "sipflow-uac" in ln)
    assert labels.split() == LABELS  # one lane each: caller, B2BUA, callee
    arrows = [ln for ln in out.splitlines() if re.search(r"\[\d+\]$", ln)]
    assert len(arrows) == sum(_per_call_id(name).values())


def test_cli_ladder_svg_and_mermaid_carry_the_link(tmp_path: Path) -> None:
    path = str(REGEN / "regen_basic.pcap")
    out = tmp_path / "l.svg"
    run = run_cli("ladder", path, "--call", "gqnbqr", "-f", "svg", "-o", str(out))  # B-leg prefix
    assert run.returncode == 0, run.stderr
    assert out.read_text().count('class="leg-note"') == 1
    mermaid = run_cli("ladder", path, "--call", "0", "-f", "mermaid").stdout
    assert re.search(r"Note over L0,L2: leg \S+: b-leg of", mermaid)
