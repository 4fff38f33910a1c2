"""The seed's FreeSWITCH B2BUA trace end to end through `sipflow analyze` (JSON).

tests/data/pbxlog/ holds lines 1-593 of ../shared/seed/call-routing-article.txt (source
noted in its README): a TCP caller bridged to a TLS trunk that challenges with 407, pasted
HTML-escaped with placeholder addresses. What it must show was read from the trace by hand.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SEED = (
    Path(__file__).resolve().parent / "data" / "pbxlog" / "freeswitch_seed_call_routing_article.txt"
)


@pytest.fixture(scope="module")
def doc() -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "sipflow.cli", "analyze", str(SEED), "--format", "json"],
        capture_output=True,
        check=True,
    )
    return json.loads(out.stdout)


def test_one_call_story_with_two_legs(doc: dict) -> None:
    assert doc["sources"][0]["format"] == "freeswitch"
    (call,) = doc["calls"]
    assert call["call_ids"] == [
        "94385YTY3ODNlNzE1YjE5MmY4NmQ3ZWUyZDAzM2E0YzBkM2I",
        "6a827514-c72b-1237-8aab-02a933b32da0",
    ]
    assert call["hops"] == ["caller_ip:35365 -> via_addr:5060", "via_addr:5080 -> ip_addr:5061"]
    assert (call["outcome"], call["final_code"]) == ("answered", 200)
    inbound, outbound = call["legs"]
    assert (inbound["role"], outbound["role"]) == ("a-leg", "b-leg")
    # tied by the dialplan bridge / originate lines of the log, not guessed
    assert (outbound["linked_to"], outbound["rule"]) == (inbound["call_id"], "pbx_log")
    assert outbound["confidence"] == 1.0
    assert (outbound["outcome"], outbound["final_code"]) == ("answered", 200)
    # INVITE, 100, 407 -> ACK -> authenticated INVITE -> 100 -> 200 -> ACK
    assert outbound["messages"] == 8
    assert call["messages"] == 12
    assert call["auth_challenges"] == 1  # the b-leg's 407, counted on the story too
    assert doc["stats"]["transports"] == {"TCP": 4, "TLS": 8}


def test_ack_to_the_407_belongs_to_the_call(doc: dict) -> None:
    """On TLS Timer D is 0: the ACK to the 407 comes after the INVITE transaction ended and
    must still be filed with its call, not reported as a request for an unknown dialog."""
    codes = {f["code"] for f in doc["findings"]}
    assert "sip.unknown_dialog" not in codes
    assert doc["activity"] == []


def test_negotiated_media_per_leg(doc: dict) -> None:
    inbound, outbound = doc["calls"][0]["legs"]
    assert inbound["media"] == "PCMA/8000 20ms, DTMF 101"
    assert outbound["media"] == "PCMA/8000 20ms, DTMF 101, SRTP AES_CM_256_HMAC_SHA1_80 tag 3"
    codes = [f["code"] for f in doc["findings"]]
    for code in ("sdp.profile_mismatch", "sdp.malformed_line", "sdp.telephone_event_mismatch"):
        assert code in codes


def test_channel_states_on_each_leg(doc: dict) -> None:
    a, b = doc["calls"][0]["channels"]
    assert a["uuid"] == "a8a2003f-5755-40fe-ab63-aab2f5264886"
    assert b["uuid"] == "cc1ae238-9efd-4f51-93e9-05abd48bea4d"
    assert (a["call_id"], b["call_id"]) == tuple(doc["calls"][0]["call_ids"])  # a-leg, b-leg
    assert a["states"][:3] == [
        "sofia_state:100->received",
        "state_change:CS_NEW->CS_INIT",
        "state_change:CS_INIT->CS_ROUTING",
    ]
    assert "callstate_change:EARLY->ACTIVE" in a["states"]
    assert "state_change:CS_CONSUME_MEDIA->CS_EXCHANGE_MEDIA" in b["states"]


def test_placeholders_do_not_count_as_malformed(doc: dict) -> None:
    """The paste replaced addresses with names; that is reported as info, not as malformed SIP."""
    assert doc["stats"]["malformed"] == 0
    edited = [f for f in doc["findings"] if "placeholder addresses" in f["message"]]
    assert edited and all(f["severity"] == "info" for f in edited)


def test_channel_events_dataframe() -> None:
    import sipflow

    trace = sipflow.analyze([SEED])
    df = trace.channel_events
    assert len(df) == len(trace.channel_event_list) > 0
    assert {"state_change", "callstate_change", "dialplan"} <= set(df["kind"])
    assert set(df["uuid"].dropna()) >= {
        "a8a2003f-5755-40fe-ab63-aab2f5264886",
        "cc1ae238-9efd-4f51-93e9-05abd48bea4d",
    }
