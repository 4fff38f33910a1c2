"""Captures of real SIPp (and Kamailio) flows on loopback, checked against oracles.

How this works: each :class:`Scenario` below is run once per session by the
``peer_runner`` fixture (tests/peers/harness.py) while tcpdump/dumpcap capture.
Three independent accounts of the same flow are then compared:

* SIPp's own logs: every message each SIPp sent and received (``-trace_shortmsg``,
  retransmissions included) and its call counters (``-trace_stat``);
* tshark 4.0 ``-z sip,stat`` on the capture;
* ``sipflow analyze --format json`` on the capture (the public interface).

On the wire of a direct flow every message goes to or from the UAC, so the UAC's
log alone is the wire; through the proxy the UAS's log adds the proxy-UAS hop. When
tshark and SIPp disagree (tshark 4.0 loses SIP in coalesced/split TCP segments, see
../shared/PERFORMANCE.md) SIPp is trusted and the tshark shortfall is asserted, so
the test notices when it changes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any, cast

import pytest
from peers.harness import (
    Run,
    Scenario,
    auth_vars,
    capture_span,
    count_wire,
    invite_finals,
    tcp_segment_profile,
    tcp_streams,
    tshark_sip_stat,
)

pytestmark = pytest.mark.peers


def _reply(code: int, reason: str) -> tuple[tuple[str, str], ...]:
    return (("code", str(code)), ("reason", reason))


ALL_CAPTURES = ("tcpdump-lo", "tcpdump-any", "dumpcap")
TCP_MANY = "tcp_answer_coalesced"

SCENARIOS = [
    # Direct, UDP, IPv4.
    Scenario("udp_answer", "uac_answer.xml", "uas_answer.xml", captures=ALL_CAPTURES),
    Scenario("udp_404", "uac_reject.xml", "uas_reject.xml", uas_vars=_reply(404, "Not Found")),
    Scenario("udp_486", "uac_reject.xml", "uas_reject.xml", uas_vars=_reply(486, "Busy Here")),
    Scenario(
        "udp_503", "uac_reject.xml", "uas_reject.xml", uas_vars=_reply(503, "Service Unavailable")
    ),
    Scenario("udp_cancel", "uac_cancel.xml", "uas_cancel.xml"),
    # T1 = 100 ms in the scenario, 4 retransmissions, then SIPp gives up (~3 s).
    Scenario(
        "udp_noanswer",
        "uac_noanswer.xml",
        "uas_noanswer.xml",
        calls=5,
        rate=20,
        uac_args=("-max_invite_retrans", "4"),
    ),
    Scenario("udp_auth401", "uac_auth.xml", "uas_auth.xml", uas_vars=auth_vars(401)),
    Scenario("udp_auth407", "uac_auth.xml", "uas_auth.xml", uas_vars=auth_vars(407)),
    Scenario("udp_register", "uac_register.xml", "uas_register.xml"),
    # Direct, TCP: many calls over one connection; the UAS's small socket buffer
    # (-buff_size) makes the UAC's segments carry several messages and split others.
    Scenario(
        TCP_MANY,
        "uac_answer.xml",
        "uas_answer.xml",
        transport="tcp",
        calls=400,
        rate=1000,
        uas_args=("-buff_size", "1024"),
        captures=("tcpdump-lo", "dumpcap"),
    ),
    Scenario("tcp_cancel", "uac_cancel.xml", "uas_cancel.xml", transport="tcp"),
    Scenario(
        "tcp_auth401", "uac_auth.xml", "uas_auth.xml", transport="tcp", uas_vars=auth_vars(401)
    ),
    # IPv6.
    Scenario(
        "udp6_answer", "uac_answer.xml", "uas_answer.xml", ipv6=True, captures=("tcpdump-any",)
    ),
    Scenario(
        "tcp6_486",
        "uac_reject.xml",
        "uas_reject.xml",
        transport="tcp",
        ipv6=True,
        uas_vars=_reply(486, "Busy Here"),
        captures=("dumpcap",),
    ),
    # Through Kamailio (record_route, every message seen on two hops).
    Scenario("k_udp_answer", "uac_answer.xml", "uas_answer.xml", proxy=True),
    Scenario("k_udp_cancel", "uac_cancel.xml", "uas_cancel.xml", proxy=True),
    # RFC 3261 §16.7 step 6: the proxy turns the UAS's 503 into 500 towards the UAC.
    Scenario(
        "k_udp_503",
        "uac_reject.xml",
        "uas_reject.xml",
        proxy=True,
        uas_vars=_reply(503, "Service Unavailable"),
    ),
    Scenario("k_udp_proxy407", "uac_auth.xml", "uas_answer.xml", proxy=True, proxy_auth=True),
    Scenario("k_udp_register", "uac_register.xml", "uas_register.xml", proxy=True),
    Scenario("k_tcp_answer", "uac_answer.xml", "uas_answer.xml", proxy=True, transport="tcp"),
    Scenario(
        "k_tcp6_answer", "uac_answer.xml", "uas_answer.xml", proxy=True, transport="tcp", ipv6=True
    ),
    Scenario("k_udp6_cancel", "uac_cancel.xml", "uas_cancel.xml", proxy=True, ipv6=True),
]
BY_NAME = {sc.name: sc for sc in SCENARIOS}
CAPTURE_CASES = [(sc.name, tool) for sc in SCENARIOS for tool in sc.captures]

# json.md outcomes for the final answers these scenarios produce.
OUTCOME = {
    200: "answered",
    486: "busy",
    487: "cancelled",
    404: "rejected",
    500: "rejected",
    503: "rejected",
}
# RFC 3261 §17.1.1.2: Timer B = 64*T1 with T1 = 500 ms. A capture cannot show that SIPp
# gave up earlier (after -max_invite_retrans), so an unanswered INVITE is only over
# once Timer B has run out before the capture ends.
TIMER_B = 64 * 0.5


def expected_outcome(final: int | None, invite_ts: float, capture_end: float) -> str:
    if final is not None:
        return OUTCOME[final]
    return "no-answer" if capture_end - invite_ts >= TIMER_B else "in-progress"


@pytest.fixture(params=[sc.name for sc in SCENARIOS])
def run(request: pytest.FixtureRequest, peer_runner: Callable[[Scenario], Run]) -> Run:
    return peer_runner(BY_NAME[request.param])


def _analysed(run: Run, tool: str, sipflow_cli: Callable[..., Any]) -> dict[str, Any]:
    key = f"sipflow:{tool}"
    if key not in run.extra:
        res = sipflow_cli(run.captures[tool])
        assert not res.traceback, res.stderr
        assert res.returncode == 0, res.stderr
        run.extra[key] = res.json
    return cast(dict[str, Any], run.extra[key])


def sipp_wire(run: Run) -> tuple[Counter[str], Counter[str]]:
    """Messages on the wire according to SIPp: UAC side, plus the UAS side via a proxy."""
    msgs = list(run.uac.messages)
    if run.scenario.proxy:
        msgs += run.uas.messages
    return count_wire(msgs)


def _tcp_coalesced(run: Run) -> bool:
    return run.scenario.name == TCP_MANY


# ---------------------------------------------------------------- the peers themselves


def test_sipp_completed_the_flow(run: Run) -> None:
    sc = run.scenario
    assert run.uac.stat("OutgoingCall") == sc.calls
    if sc.name == "udp_noanswer":
        assert run.uac.stat("FailedMaxUDPRetrans") == sc.calls
        assert run.uac.stat("Retransmissions") == 4 * sc.calls
    else:
        assert run.uac.stat("SuccessfulCall") == sc.calls, run.uac.errors[-2000:]
        assert run.uac.returncode == 0


def test_tshark_agrees_with_sipp(run: Run) -> None:
    req, resp = sipp_wire(run)
    for tool, path in run.captures.items():
        st = tshark_sip_stat(path)
        if _tcp_coalesced(run):
            segments, multi, mid = tcp_segment_profile(path)
            # The scenario did what it claims: several messages per segment, and
            # segments that start inside a message.
            assert multi > 0 and mid > 0, (segments, multi, mid)
            assert tcp_streams(path) == 1  # all calls over one connection
            # Known tshark 4.0 shortfall on such streams: fewer messages than SIPp logged.
            # Measured on 8 runs of 300 calls: tshark found 1951-2090 of 2100.
            sipp_total = sum(req.values()) + sum(resp.values())
            assert st.total < sipp_total, (tool, sipp_total, st, (segments, multi, mid))
        else:
            assert (st.requests, st.responses) == (dict(req), dict(resp)), tool


def test_proxy_rewrites_503_to_500(peer_runner: Callable[[Scenario], Run]) -> None:
    run = peer_runner(BY_NAME["k_udp_503"])
    assert {c for codes in invite_finals(run.uac.messages).values() for c in codes} == {500}
    assert {c for codes in invite_finals(run.uas.messages).values() for c in codes} == {503}


# ---------------------------------------------------------------- sipflow against them


@pytest.mark.parametrize(("name", "tool"), CAPTURE_CASES)
def test_sipflow_message_counts(
    name: str, tool: str, peer_runner: Callable[[Scenario], Run], sipflow_cli: Callable[..., Any]
) -> None:
    run = peer_runner(BY_NAME[name])
    stats = _analysed(run, tool, sipflow_cli)["stats"]
    req, resp = sipp_wire(run)
    where = run.captures[tool]
    assert stats["sip_requests"] == dict(req), where
    assert stats["sip_responses"] == dict(resp), where
    assert stats["sip_messages"] == sum(req.values()) + sum(resp.values())
    expected_transport = run.scenario.transport.upper()
    assert set(stats["transports"]) == {expected_transport}


def test_sipflow_calls_and_final_codes(run: Run, sipflow_cli: Callable[..., Any]) -> None:
    data = _analysed(run, run.scenario.captures[0], sipflow_cli)
    finals = invite_finals(run.uac.messages)  # the caller's view
    by_call_id = {cid: call for call in data["calls"] for cid in call["call_ids"]}
    first_invite = {m.call_id: m.ts for m in reversed(run.uac.sent()) if m.method == "INVITE"}
    capture_end = capture_span(run.captures[run.scenario.captures[0]])[1]
    assert len(data["calls"]) == len(finals)
    assert set(by_call_id) == set(finals)
    for cid, codes in finals.items():
        call = by_call_id[cid]
        final = codes[-1] if codes else None
        assert call["final_code"] == final, cid
        assert call["outcome"] == expected_outcome(final, first_invite[cid], capture_end), cid
        assert call["auth_challenges"] == sum(1 for c in codes if c in (401, 407)), cid
        assert len(call["hops"]) == (2 if run.scenario.proxy else 1), call["hops"]


def test_sipflow_retransmissions(
    peer_runner: Callable[[Scenario], Run], sipflow_cli: Callable[..., Any]
) -> None:
    run = peer_runner(BY_NAME["udp_noanswer"])
    data = _analysed(run, "tcpdump-lo", sipflow_cli)
    sipp_retrans = run.uac.stat("Retransmissions")
    assert tshark_sip_stat(run.pcap).resent == sipp_retrans
    assert data["stats"]["retransmissions"] == sipp_retrans
    for call in data["calls"]:
        assert call["messages"] == 5
        assert call["retransmissions"] == 4


@pytest.mark.parametrize("name", ["udp_register", "k_udp_register"])
def test_sipflow_register_activity(
    name: str, peer_runner: Callable[[Scenario], Run], sipflow_cli: Callable[..., Any]
) -> None:
    run = peer_runner(BY_NAME[name])
    data = _analysed(run, "tcpdump-lo", sipflow_cli)
    hops = 2 if run.scenario.proxy else 1
    (register,) = [a for a in data["activity"] if a["method"] == "REGISTER"]
    n = run.scenario.calls
    assert register["responses"] == {"401": n * hops, "200": n * hops}
    assert data["calls"] == []


def test_same_flow_same_answer_on_every_capture_tool(
    peer_runner: Callable[[Scenario], Run], sipflow_cli: Callable[..., Any]
) -> None:
    run = peer_runner(BY_NAME["udp_answer"])
    results = {tool: _analysed(run, tool, sipflow_cli) for tool in ALL_CAPTURES}
    formats = {tool: r["sources"][0]["format"] for tool, r in results.items()}
    assert formats["dumpcap"] == "pcapng" and formats["tcpdump-lo"] == "pcap", formats
    link = {tool: r["sources"][0]["link_types"] for tool, r in results.items()}
    # tcpdump 4.99 writes "any" captures as LINUX_SLL2 (capinfos: Linux cooked-mode v2).
    assert link == {"tcpdump-lo": ["EN10MB"], "tcpdump-any": ["LINUX_SLL2"], "dumpcap": ["EN10MB"]}
    keys = ("call_ids", "final_code", "outcome", "messages")
    views = {
        tool: (
            r["stats"]["sip_requests"],
            r["stats"]["sip_responses"],
            sorted([call[k] for k in keys] for call in r["calls"]),
        )
        for tool, r in results.items()
    }
    assert views["tcpdump-any"] == views["tcpdump-lo"] == views["dumpcap"]
