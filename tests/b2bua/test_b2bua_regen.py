"""``sipflow regen``: built-in UAC + UAS + B2BUA on loopback, checked by the analyser.

Each scenario is re-enacted over real sockets; ``sipflow.analyze`` on the pcap and on the
FreeSWITCH-style log must find the Call-IDs the truth JSON names, with the truth's
outcome and final code on the caller's leg.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import sipflow
from sipflow.api import Options
from sipflow.b2bua.scenarios import SCENARIOS, RegenResult, regen
from sipflow.sip.message import SipRequest, SipResponse

EXPECTED = {
    "basic": ("answered", 200),
    "busy": ("busy", 486),
    "notfound": ("rejected", 404),
    "cancel": ("cancelled", 487),
    "noanswer": ("no-answer", 408),
    "auth407": ("answered", 200),
    "hold": ("answered", 200),
    "transfer": ("answered", 200),
    "load": ("answered", 200),
}


@pytest.fixture(scope="module")
def regen_run(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], RegenResult]:
    wd = tmp_path_factory.mktemp("regen")
    done: dict[str, RegenResult] = {}

    def get(name: str) -> RegenResult:
        if name not in done:
            done[name] = regen(name, wd / f"{name}.pcap", seed=11)
        return done[name]

    return get


def _truth(r: RegenResult) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(r.truth.read_text())
    return data


@pytest.mark.parametrize("name", list(EXPECTED))
def test_analyze_finds_the_truths_calls(regen_run: Callable[[str], RegenResult], name: str) -> None:
    r = regen_run(name)
    truth = _truth(r)
    n = len(SCENARIOS[name].calls)
    outcome, code = EXPECTED[name]
    assert len(truth["calls"]) == n
    assert {c["outcome"] for c in truth["calls"]} == {outcome}
    assert {c["final_code"] for c in truth["calls"]} == {code}
    assert r.dropped == {"uac": {}, "b2bua": {}, "uas": {}}
    want = {cid for c in truth["calls"] for cid in c["call_ids"]}
    legs = 3 if name == "transfer" else 2  # a transfer's target is one more leg
    assert len(want) == legs * n  # own Call-ID per leg
    for path in (r.pcap, r.log):
        trace = sipflow.analyze([path])
        found = {cid: c for c in trace.call_records for cid in c.call_ids}
        assert set(found) == want, path
        # the analyser's call stories tie the legs exactly as the truth names them
        stories = sorted(sorted(c["call_ids"]) for c in trace.to_dict()["calls"])
        assert stories == sorted(sorted(c["call_ids"]) for c in truth["calls"]), path
        for call in truth["calls"]:
            a = found[call["a_leg"]["call_id"]]
            assert (a.outcome.value, a.final_code) == (outcome, code), (path, call)


def test_auth407_is_the_seeds_flow(regen_run: Callable[[str], RegenResult]) -> None:
    r = regen_run("auth407")
    truth = _truth(r)
    assert truth["tls_cleartext_ports"]
    call = truth["calls"][0]
    assert call["a_leg"]["transport"] == "TCP" and call["b_legs"][0]["transport"] == "TLS"
    uas_port = int(call["b_legs"][0]["peer"].rsplit(":", 1)[1])
    assert uas_port in truth["tls_cleartext_ports"]
    assert call["b_legs"][0]["auth_retries"] == 1
    msgs = sipflow.analyze([r.pcap], Options(keep_messages=True)).message_list
    b_id = call["b_legs"][0]["call_id"]
    invites = [
        m for m in msgs if isinstance(m, SipRequest) and m.method == "INVITE" and m.call_id == b_id
    ]
    assert len(invites) == 2
    assert invites[0].headers.get("proxy-authorization") is None
    assert (invites[1].headers.get("proxy-authorization") or "").startswith("Digest ")
    assert invites[1].body.count(b"a=crypto:") == 4 and b"RTP/SAVP" in invites[1].body
    ok = [
        m
        for m in msgs
        if isinstance(m, SipResponse) and m.status == 200 and m.call_id == call["a_leg"]["call_id"]
    ]
    assert ok and b"a=crypto" not in ok[0].body and b"RTP/AVP" in ok[0].body  # plain RTP in


def test_hold_passes_reinvites_through(regen_run: Callable[[str], RegenResult]) -> None:
    r = regen_run("hold")
    msgs = sipflow.analyze([r.pcap], Options(keep_messages=True)).message_list
    call = _truth(r)["calls"][0]
    for cid in call["call_ids"]:
        reinvites = [
            m
            for m in msgs
            if isinstance(m, SipRequest) and m.method == "INVITE" and m.call_id == cid and m.to_tag
        ]
        assert [b"a=sendonly" in m.body for m in reinvites] == [True, False]
        assert [b"a=sendrecv" in m.body for m in reinvites] == [False, True]


def test_load_calls_overlap(regen_run: Callable[[str], RegenResult]) -> None:
    calls = _truth(regen_run("load"))["calls"]
    spans = sorted((c["start_ns"], c["end_ns"]) for c in calls)
    assert any(b[0] < a[1] for a, b in itertools.pairwise(spans))


def test_cli_list_and_run(tmp_path: Path) -> None:
    cli = [sys.executable, "-c", "from sipflow.cli import main; main()", "regen"]
    listed = subprocess.run(
        [*cli, "--list"], capture_output=True, text=True, timeout=60, check=True
    )
    assert [ln.split()[0] for ln in listed.stdout.splitlines()] == list(SCENARIOS)
    out = tmp_path / "busy.pcap"
    done = subprocess.run(
        [*cli, "busy", "-o", str(out)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert out.stat().st_size > 24 and out.with_suffix(".log").exists()
    bad = subprocess.run(
        [*cli, "nosuch", "-o", str(out)], capture_output=True, text=True, timeout=60
    )
    assert bad.returncode == 2 and "unknown scenario" in bad.stderr


def test_transfer_is_a_blind_transfer_and_one_story(
    regen_run: Callable[[str], RegenResult],
) -> None:
    """RFC 3515 / RFC 5589 §6.1 on the wire, and the analyser ties the target's leg to the
    transferor's by the REFER (role ``transfer``), in the pcap and in the log."""
    r = regen_run("transfer")
    (call,) = _truth(r)["calls"]
    a_id, b_id, c_id = call["call_ids"]
    assert [b["role"] for b in call["b_legs"]] == ["b-leg", "transfer"]
    (xfer,) = call["transfers"]
    assert (xfer["by"], xfer["call_id"], xfer["final_code"]) == (b_id, c_id, 200)
    msgs = sipflow.analyze([r.pcap], Options(keep_messages=True)).message_list

    def on(cid: str) -> list[tuple[str, int | str]]:
        return [
            (m.method, m.cseq.method if m.cseq else "")
            if isinstance(m, SipRequest)
            else (str(m.status), m.cseq.method if m.cseq else "")
            for m in msgs
            if m.call_id == cid
        ]

    b_flow = on(b_id)
    assert b_flow.index(("REFER", "REFER")) < b_flow.index(("202", "REFER"))
    assert b_flow.count(("NOTIFY", "NOTIFY")) == 2 and b_flow[-2:] == [
        ("BYE", "BYE"),
        ("200", "BYE"),
    ]
    notifies = [m for m in msgs if isinstance(m, SipRequest) and m.method == "NOTIFY"]
    assert [m.body for m in notifies] == [b"SIP/2.0 100 Trying\r\n", b"SIP/2.0 200 OK\r\n"]
    assert [m.headers.get("subscription-state") for m in notifies] == [
        "active;expires=60",
        "terminated;reason=noresource",
    ]
    (refer,) = [m for m in msgs if isinstance(m, SipRequest) and m.method == "REFER"]
    (c_inv,) = [
        m for m in msgs if isinstance(m, SipRequest) and m.call_id == c_id and m.method == "INVITE"
    ]
    assert c_inv.headers.get("referred-by") == refer.headers.get("referred-by")
    assert refer.headers.get("refer-to") == f"<{xfer['refer_to']}>"
    # the caller is re-INVITEd with the target's SDP (media passes through)
    c_ok = [m for m in msgs if isinstance(m, SipResponse) and m.call_id == c_id and m.status == 200]
    reinvites = [
        m
        for m in msgs
        if isinstance(m, SipRequest) and m.method == "INVITE" and m.call_id == a_id and m.to_tag
    ]
    assert [m.body for m in reinvites] == [c_ok[0].body]
    for path in (r.pcap, r.log):
        (story,) = sipflow.analyze([path]).to_dict()["calls"]
        roles = {
            leg["call_id"]: (leg["role"], leg["linked_to"], leg["rule"]) for leg in story["legs"]
        }
        assert roles[c_id] == ("transfer", b_id, "refer"), path
        assert roles[a_id][0] == "a-leg" and roles[b_id][:2] == ("b-leg", a_id), path
        assert story["outcome"] == "answered" and story["ended_by"] == "caller", path
