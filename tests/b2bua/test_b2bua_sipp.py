"""SIPp UAC -> sipflow b2bua -> SIPp UAS on 127.0.0.1, UDP and TCP (real processes).

Oracles: SIPp's own statistics and message logs on both sides (did each call end as
scripted, with which final code), tcpdump (the B2BUA's own pcap must hold the same SIP
messages, byte for byte), and ``sipflow.analyze`` on the B2BUA's pcap and on its
FreeSWITCH-style log (same calls). The truth JSON must name the Call-IDs SIPp used.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from b2bua_peers import B2buaRun, run_b2bua, wire_messages
from peers.harness import PeerError, Scenario, auth_vars, invite_finals, missing_tools

import sipflow

pytestmark = pytest.mark.peers

CALLS = 3


def _reply(code: int, reason: str) -> tuple[tuple[str, str], ...]:
    return (("code", str(code)), ("reason", reason))


# name -> (scenario, the final code the caller must see, the one the callee sends (0: the
# callee sends none, None: the callee sees no call), kwargs for run_b2bua)
CASES: dict[str, tuple[Scenario, int, int | None, dict[str, str]]] = {}
for t in ("udp", "tcp"):
    CASES[f"{t}_answer"] = (
        Scenario(f"{t}_answer", "uac_answer.xml", "uas_answer.xml", CALLS, transport=t, proxy=True),
        200,
        200,
        {},
    )
    CASES[f"{t}_busy"] = (
        Scenario(
            f"{t}_busy",
            "uac_reject.xml",
            "uas_reject.xml",
            CALLS,
            transport=t,
            proxy=True,
            uas_vars=_reply(486, "Busy Here"),
        ),
        486,
        486,
        {},
    )
    CASES[f"{t}_cancel"] = (
        Scenario(f"{t}_cancel", "uac_cancel.xml", "uas_cancel.xml", CALLS, transport=t, proxy=True),
        487,
        487,
        {},
    )
CASES["udp_503"] = (
    Scenario(
        "udp_503",
        "uac_reject.xml",
        "uas_reject.xml",
        CALLS,
        proxy=True,
        uas_vars=_reply(503, "Service Unavailable"),
    ),
    503,
    503,
    {},
)
for code in (401, 407):
    CASES[f"udp_auth{code}"] = (
        Scenario(
            f"udp_auth{code}",
            "uac_answer.xml",
            "uas_auth.xml",
            CALLS,
            proxy=True,
            uas_vars=auth_vars(code),
        ),
        200,
        200,
        {"extra_route": 'username = "alice"\npassword = "secret"'},
    )
OWN = str(Path(__file__).resolve().parent / "scenarios" / "uac_timeout.xml")
CASES["udp_noroute"] = (
    Scenario("udp_noroute", OWN, "uas_answer.xml", CALLS, proxy=True),
    404,
    None,
    {"match": "^nobody$"},
)
CASES["tcp_timeout"] = (
    Scenario("tcp_timeout", OWN, "uas_noanswer.xml", CALLS, transport="tcp", proxy=True),
    408,
    0,
    {"top": "no_answer_timeout = 1.0"},
)
CASES["udp_caller_auth"] = (  # the B2BUA challenges the caller (407), SIPp answers
    Scenario("udp_caller_auth", "uac_auth.xml", "uas_answer.xml", CALLS, proxy=True),
    200,
    200,
    {"top": '\n[auth]\nrealm = "sipflow.test"\nusers = { alice = "secret" }'},
)
CASES["udp_kamailio_auth"] = (
    Scenario("udp_kamailio_auth", "uac_answer.xml", "uas_answer.xml", CALLS, proxy=True),
    200,
    200,
    {"extra_route": 'username = "alice"\npassword = "secret"', "kamailio_auth": "1"},
)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], B2buaRun]:
    missing = missing_tools()
    if missing:
        pytest.skip(f"real peers not installed: {', '.join(missing)}")
    if os.geteuid() != 0:
        pytest.skip("capturing on lo with tcpdump needs root")
    wd = tmp_path_factory.mktemp("b2bua")
    done: dict[str, B2buaRun | PeerError] = {}

    def get(name: str) -> B2buaRun:
        if name not in done:
            sc, _, _, kw = CASES[name]
            args: dict[str, Any] = {k: v for k, v in kw.items() if k != "kamailio_auth"}
            try:
                done[name] = run_b2bua(sc, wd, kamailio_auth="kamailio_auth" in kw, **args)
            except PeerError as e:
                done[name] = e
        result = done[name]
        if isinstance(result, PeerError):
            pytest.fail(f"{name}: {result}")
        return result

    return get


@pytest.mark.parametrize("name", list(CASES))
def test_calls_end_as_scripted_per_sipp(runs: Callable[[str], B2buaRun], name: str) -> None:
    run = runs(name)
    _, caller_code, callee_code, _ = CASES[name]
    for log in (run.uac, run.uas) if callee_code is not None else (run.uac,):
        assert log.stat("SuccessfulCall") == CALLS, (log.role, log.errors[-500:])
        assert log.stat("FailedCall") == 0, (log.role, log.errors[-500:])
    caller = invite_finals(run.uac.messages)
    assert len(caller) == CALLS
    want_caller = [407, caller_code] if "caller_auth" in name else [caller_code]
    assert all(codes == want_caller for codes in caller.values()), caller
    callee = invite_finals(run.uas.messages)
    if callee_code is None:
        assert callee == {}
        return
    assert len(callee) == CALLS
    want = [callee_code] if callee_code else []
    assert all(codes[-1:] == want for codes in callee.values()), callee


def _touches(key: tuple[str, str, bytes], ports: set[str]) -> bool:
    return any(key[i].endswith(":" + p) for i in (0, 1) for p in ports)


@pytest.mark.parametrize("name", list(CASES))
def test_own_pcap_equals_tcpdump(runs: Callable[[str], B2buaRun], name: str) -> None:
    run = runs(name)
    ours = wire_messages(run.pcap)
    theirs = wire_messages(run.tcpdump)
    if "kamailio" in name:  # tcpdump also saw Kamailio <-> SIPp UAS, which we do not
        ports = {str(p) for p in run.ports[2:3]}
        theirs = Counter(
            {
                k: v
                for k, v in theirs.items()
                if any(k[i].endswith(":" + p) for i in (0, 1) for p in ports)
            }
        )
    assert sum(ours.values()) >= 4 * CALLS
    assert ours == theirs


@pytest.mark.parametrize("name", ["udp_answer", "tcp_busy", "udp_cancel", "udp_auth407"])
def test_truth_names_the_call_ids_sipp_used(runs: Callable[[str], B2buaRun], name: str) -> None:
    run = runs(name)
    truth = json.loads(run.truth.read_text())
    calls = truth["calls"]
    assert len(calls) == CALLS
    assert {c["a_leg"]["call_id"] for c in calls} == set(invite_finals(run.uac.messages))
    b_ids = {cid for c in calls for cid in (b["call_id"] for b in c["b_legs"])}
    assert b_ids == set(invite_finals(run.uas.messages))
    expected = {"udp_answer": "answered", "tcp_busy": "busy", "udp_cancel": "cancelled"}
    assert {c["outcome"] for c in calls} == {expected.get(name, "answered")}


@pytest.mark.parametrize("name", ["udp_answer", "tcp_answer", "udp_busy", "tcp_cancel"])
def test_analyze_finds_the_same_calls_in_pcap_and_log(
    runs: Callable[[str], B2buaRun], name: str
) -> None:
    run = runs(name)
    truth = json.loads(run.truth.read_text())
    want = sorted(tuple(sorted(c["call_ids"])) for c in truth["calls"])
    for path in (run.pcap, run.log):
        trace = sipflow.analyze([path])
        ids = sorted({cid for c in trace.call_records for cid in c.call_ids})
        assert ids == sorted(cid for group in want for cid in group), path
        outcomes = Counter(c.outcome.value for c in trace.call_records)
        assert outcomes[truth["calls"][0]["outcome"]] >= CALLS, (path, outcomes)
