"""PBX log linkage when concurrent calls' channels share a name (issue 7).

Every call to one number or trunk gateway gives its B channel the same name
(``sofia/external/service@host:port``), so ``Originate Resulted in Success: [name]`` must be
resolved to one channel *instance*: by the ``Peer UUID`` the line carries (later FreeSWITCH
1.10 builds), else by which channel of that name answered (or hung up) last before the
line, else by the first one created after the calling channel. Checked on hand-written
FreeSWITCH lines read by the real log reader, and on logs of the reference B2BUA
(``sipflow regen traffic``: callees drawn from ten numbers, so names repeat) analysed
from the LOG alone against the truth JSON.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from truth import load_truth
from truth import score as truth_score

from sipflow.api import Options, analyze
from sipflow.b2bua.scenarios import regen
from sipflow.correlate.legs import correlate, facts_of
from sipflow.correlate.logs import log_links
from sipflow.findings import Finding
from sipflow.ingest.pbxlog import ChannelEvent, EventKind, link_channels, read_log_bytes
from sipflow.ingest.types import SourceStats

A1, A2 = "aaaaaaa1-0000-4000-8000-000000000001", "aaaaaaa2-0000-4000-8000-000000000002"
B1, B2 = "bbbbbbb1-0000-4000-8000-000000000001", "bbbbbbb2-0000-4000-8000-000000000002"
A_NAME = "sofia/internal/1001@192.0.2.10"
B_NAME = "sofia/external/service@192.0.2.30:5060"
CALL_ID = {A1: "a1@x", A2: "a2@x", B1: "b1@x", B2: "b2@x"}


def _line(uuid: str, ms: int, text: str) -> str:
    return f"{uuid} 2026-11-29 10:00:{ms // 1000:02d}.{ms % 1000:03d}000 [DEBUG] x.c:1 {text}"


def _new(uuid: str, name: str, ms: int) -> list[str]:
    return [
        _line(uuid, ms, f"New Channel {name} [{uuid}]"),
        _line(uuid, ms, f"sending invite call-id: {CALL_ID[uuid]}"),
    ]


def _answered(uuid: str, name: str, ms: int) -> str:
    return _line(uuid, ms, f"Channel [{name}] has been answered")


def _hangup(uuid: str, name: str, ms: int, cause: str = "NORMAL_CLEARING") -> str:
    return _line(uuid, ms, f"Hangup {name} [CS_EXECUTE] [{cause}]")


def _originate(a: str, ms: int, result: str = "Success", tail: str = "") -> str:
    return _line(a, ms, f"({A_NAME}) Originate Resulted in {result}: [{B_NAME}]{tail}")


def _events(lines: list[str]) -> list[ChannelEvent]:
    findings: list[Finding] = []
    data = ("\n".join(lines) + "\n").encode()
    items = read_log_bytes(data, 0, SourceStats("test.log"), findings, "freeswitch")
    return [e for e in items if isinstance(e, ChannelEvent)]


def _pairs(lines: list[str]) -> set[frozenset[str]]:
    return {frozenset((a, b)) for a, b, _ev in log_links(_events(lines))}


def _both_calls_up() -> list[str]:
    """A1 and A2 (one name) each dial B_NAME; their B channels are created in call order."""
    return [
        *_new(A1, A_NAME, 0),
        *_new(B1, B_NAME, 5),
        *_new(A2, A_NAME, 100),
        *_new(B2, B_NAME, 105),
    ]


def test_the_peer_that_answered_last_is_the_originates_peer() -> None:
    # the second call's B answers first: its originate line comes first and names the
    # same channel name as the first call's later one
    lines = [
        *_both_calls_up(),
        _answered(B2, B_NAME, 900),
        _originate(A2, 900),
        _answered(B1, B_NAME, 1500),
        _originate(A1, 1500),
    ]
    events = _events(lines)
    assert Counter(e.channel for e in events if e.kind is EventKind.NEW_CHANNEL)[B_NAME] == 2
    assert _pairs(lines) == {frozenset(("a1@x", "b1@x")), frozenset(("a2@x", "b2@x"))}


def test_a_cancelled_originate_takes_the_first_peer_created_after_its_caller() -> None:
    # CANCEL from the caller: "Originate Resulted in Fail" before either B hung up
    lines = [
        *_both_calls_up(),
        _originate(A1, 700, "Fail"),
        _hangup(B1, B_NAME, 701, "ORIGINATOR_CANCEL"),
        _originate(A2, 800, "Fail"),
        _hangup(B2, B_NAME, 801, "ORIGINATOR_CANCEL"),
    ]
    assert _pairs(lines) == {frozenset(("a1@x", "b1@x")), frozenset(("a2@x", "b2@x"))}


def test_a_failed_originate_takes_the_peer_that_hung_up() -> None:
    lines = [
        *_both_calls_up(),
        _hangup(B2, B_NAME, 300, "USER_BUSY"),
        _originate(A2, 300, "Fail"),
        _answered(B1, B_NAME, 900),
        _originate(A1, 900),
    ]
    assert _pairs(lines) == {frozenset(("a1@x", "b1@x")), frozenset(("a2@x", "b2@x"))}


def test_peer_uuid_on_the_line_wins() -> None:
    # both answered before either originate line: only the Peer UUID tells them apart
    lines = [
        *_both_calls_up(),
        _answered(B1, B_NAME, 900),
        _answered(B2, B_NAME, 901),
        _originate(A1, 902, tail=f" Peer UUID: {B1}"),
        _originate(A2, 903, tail=f" Peer UUID: {B2}"),
    ]
    assert _pairs(lines) == {frozenset(("a1@x", "b1@x")), frozenset(("a2@x", "b2@x"))}
    without = [ln.split(" Peer UUID")[0] for ln in lines]
    assert _pairs(without) != _pairs(lines), "the case needs the uuid (the test can fail)"


def test_call_ids_stay_with_their_channel_instance() -> None:
    """link_channels ties a Call-ID to each channel uuid, not to the first channel of a name."""
    lines = [*_both_calls_up(), _hangup(B2, B_NAME, 300), _hangup(B1, B_NAME, 400)]
    events = link_channels(_events(lines), [])
    assert all(e.call_id for e in events)
    by_uuid: dict[str, set[str]] = {}
    for e in events:
        if e.call_id:
            by_uuid.setdefault(e.uuid or "", set()).add(e.call_id)
    assert by_uuid == {u: {c} for u, c in CALL_ID.items()}


# -- the reference B2BUA's log, analysed alone -------------------------------------------------


@pytest.fixture(scope="module")
def traffic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("loglinks") / "traffic.pcap"
    regen("traffic", out, seed=3, calls=40, rate=20.0)
    return out


@pytest.mark.timeout(120)
def test_log_alone_groups_concurrent_calls_to_one_number(traffic: Path) -> None:
    log, truth = traffic.with_suffix(".log"), load_truth(traffic.with_suffix(".truth.json"))
    t = analyze([log], Options(keep_messages=False))
    names = Counter(
        e.channel
        for e in t.channel_event_list
        if e.kind is EventKind.NEW_CHANNEL and e.channel.startswith("sofia/external/")
    )
    assert max(names.values()) >= 2, "the run must give B channels of one name"
    legs = [facts_of(c, m) for c, m in zip(t.call_records, t.call_media, strict=True)]
    corr = correlate(legs, t.channel_event_list)
    s = truth_score(truth, corr, legs)
    assert s.legs == 2 * len(truth) == len(legs)
    assert s.correct == s.legs, s.wrong_links
    assert not s.wrong_links
    # every log pair is inside one truth call, and every call has one
    call_of = {cid: k for k, call in enumerate(truth) for cid in call}
    pairs = log_links(t.channel_event_list)
    assert all(call_of[a] == call_of[b] for a, b, _ev in pairs)
    assert {call_of[a] for a, _b, _ev in pairs} == set(range(len(truth)))
    assert all(link.rule == "pbx_log" for link in corr.links)
