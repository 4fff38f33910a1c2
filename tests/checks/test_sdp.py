"""SDP/SRTP rules: every code raised by one flow and not by its near twin; the seed trace.

Each case is a real message flow (parsed SIP through the CallBuilder, then
``media_for_call``) that differs from its "must not raise" twin in one thing only.
The seed trace (a FreeSWITCH siptrace pasted into an article) is read from
../shared/seed; what it must give is what the issue states (and the FreeSWITCH log itself
says: "Found suite AES_CM_256_HMAC_SHA1_80", "Set Codec ... PCMA/8000 20 ms").
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest
from sdp.sdp_flows import PCMA_TE, SEED, audio, flow, run_calls, sdp, seed_messages

from sipflow.checks.sdp import CODES, SDP_COLUMNS, CallMedia, media_for_call, sdp_rows
from sipflow.findings import Severity

DOCS = Path(__file__).resolve().parents[2] / "docs" / "findings.md"
K30 = base64.b64encode(bytes(30)).decode()
K20 = base64.b64encode(bytes(20)).decode()
FP = "sha-256 " + ":".join(["AB"] * 32)
FP2 = "sha-256 " + ":".join(["CD"] * 32)
TE = ("a=rtpmap:101 telephone-event/8000",)
TE96 = "a=rtpmap:96 telephone-event/8000"
OPUS = "a=rtpmap:96 opus/48000/2"
F15, F16 = "a=fmtp:101 0-15", "a=fmtp:101 0-16"
S32 = "AES_CM_128_HMAC_SHA1_32"


def m(proto: str = "RTP/AVP", fmts: str = "8 101", *attrs: str, port: int = 4000) -> str:
    text: str = audio(port, proto, fmts, *attrs)
    return text


def crypto(tag: int, suite: str = "AES_CM_128_HMAC_SHA1_80", key: str = K30) -> str:
    return f"a=crypto:{tag} {suite} inline:{key}"


def dtls(setup: str, fp: str | None = FP) -> tuple[str, ...]:
    return (f"a=setup:{setup}", *([f"a=fingerprint:{fp}"] if fp else []))


PLAIN = m("RTP/AVP", "8 101", *PCMA_TE)
SDES = ("RTP/SAVP", "8")
DTLSP = ("UDP/TLS/RTP/SAVP", "8")


def media(
    offer: str, answer: str | None, final: str = "200", ctype: str = "application/sdp"
) -> CallMedia:
    steps = [("INVITE", offer), (final, answer)]
    steps.append(("ACK", None))
    (call,) = run_calls(flow(steps, ctype=ctype))
    return media_for_call(call)


def codes(cm: CallMedia) -> set[str]:
    return {f.code for f in cm.findings}


# (code, offer, answer, final) that must raise, and a twin that must not
CASES: list[tuple[str, tuple[str, str | None, str], tuple[str, str | None, str]]] = [
    (
        "sdp.malformed_line",
        (sdp(PLAIN), sdp(m("RTP/AVP", "8 19", "a=rtpmap:19 ")), "200"),
        (sdp(PLAIN), sdp(m("RTP/AVP", "8", "a=rtpmap:8 PCMA/8000")), "200"),
    ),
    (
        "sdp.missing_rtpmap",
        (sdp(m("RTP/AVP", "96")), sdp(m("RTP/AVP", "96", OPUS)), "200"),
        (sdp(m("RTP/AVP", "96", OPUS)), sdp(m("RTP/AVP", "96", OPUS)), "200"),
    ),
    (
        "sdp.sdes_key_length",
        (sdp(m(*SDES, crypto(1, key=K20))), sdp(m(*SDES, crypto(1))), "200"),
        (sdp(m(*SDES, crypto(1))), sdp(m(*SDES, crypto(1))), "200"),
    ),
    (
        "sdp.sdes_unknown_suite",
        (sdp(m(*SDES, crypto(1, "MY_CIPHER"), crypto(2))), sdp(m(*SDES, crypto(2))), "200"),
        (sdp(m(*SDES, crypto(1), crypto(2))), sdp(m(*SDES, crypto(2))), "200"),
    ),
    (
        "sdp.mline_count_mismatch",
        (sdp(PLAIN, m("RTP/AVP", "31", port=5000)), sdp(PLAIN), "200"),
        (sdp(PLAIN, m("RTP/AVP", "31", port=5000)), sdp(PLAIN, m("RTP/AVP", "31", port=0)), "200"),
    ),
    (
        "sdp.profile_mismatch",
        (sdp(PLAIN), sdp(m("RTP/SAVP", "8 101", *PCMA_TE)), "200"),
        (sdp(PLAIN), sdp(m("RTP/AVP", "8 101", *PCMA_TE)), "200"),
    ),
    (
        "sdp.answer_codec_not_offered",
        (sdp(m("RTP/AVP", "8")), sdp(m("RTP/AVP", "0")), "200"),
        (sdp(m("RTP/AVP", "8 0")), sdp(m("RTP/AVP", "0")), "200"),
    ),
    (
        "sdp.payload_type_remapped",
        (sdp(m("RTP/AVP", "8 101", *TE)), sdp(m("RTP/AVP", "8 96", TE96)), "200"),
        (sdp(m("RTP/AVP", "8 101", *TE)), sdp(m("RTP/AVP", "8 101", *TE)), "200"),
    ),
    (
        "sdp.telephone_event_one_side",
        (sdp(m("RTP/AVP", "8 101", *TE)), sdp(m("RTP/AVP", "8")), "200"),
        (sdp(m("RTP/AVP", "8")), sdp(m("RTP/AVP", "8")), "200"),
    ),
    (
        "sdp.telephone_event_mismatch",
        (sdp(m("RTP/AVP", "8 101", *TE, F15)), sdp(m("RTP/AVP", "8 101", *TE, F16)), "200"),
        (sdp(m("RTP/AVP", "8 101", *TE, F15)), sdp(m("RTP/AVP", "8 101", *TE)), "200"),
    ),
    (
        "sdp.direction_conflict",
        (sdp(m("RTP/AVP", "8", "a=sendonly")), sdp(m("RTP/AVP", "8", "a=sendonly")), "200"),
        (sdp(m("RTP/AVP", "8", "a=sendonly")), sdp(m("RTP/AVP", "8", "a=recvonly")), "200"),
    ),
    (
        "sdp.sdes_tag_not_offered",
        (sdp(m(*SDES, crypto(1), crypto(2))), sdp(m(*SDES, crypto(5))), "200"),
        (sdp(m(*SDES, crypto(1), crypto(2))), sdp(m(*SDES, crypto(2))), "200"),
    ),
    (
        "sdp.sdes_suite_changed",
        (sdp(m(*SDES, crypto(1))), sdp(m(*SDES, crypto(1, S32))), "200"),
        (sdp(m(*SDES, crypto(1, S32))), sdp(m(*SDES, crypto(1, S32))), "200"),
    ),
    (
        "sdp.sdes_best_effort",
        (sdp(m("RTP/AVP", "8", crypto(1))), sdp(m("RTP/AVP", "8", crypto(1))), "200"),
        (sdp(m(*SDES, crypto(1))), sdp(m(*SDES, crypto(1))), "200"),
    ),
    (
        "sdp.dtls_setup_conflict",
        (sdp(m(*DTLSP, *dtls("actpass"))), sdp(m(*DTLSP, *dtls("actpass", FP2))), "200"),
        (sdp(m(*DTLSP, *dtls("actpass"))), sdp(m(*DTLSP, *dtls("active", FP2))), "200"),
    ),
    (
        "sdp.dtls_fingerprint",
        (sdp(m(*DTLSP, *dtls("actpass"))), sdp(m(*DTLSP, *dtls("active", None))), "200"),
        (sdp(m(*DTLSP, *dtls("actpass"))), sdp(m(*DTLSP, *dtls("passive", FP2))), "200"),
    ),
    (
        "sdp.offer_rejected",
        (sdp(PLAIN), None, "488"),
        (sdp(PLAIN), None, "486"),
    ),
    (
        "sdp.no_answer",
        (sdp(PLAIN), None, "200"),
        (sdp(PLAIN), sdp(PLAIN), "200"),
    ),
]  # fmt: skip


@pytest.mark.parametrize(("code", "bad", "good"), CASES, ids=[c[0] for c in CASES])
def test_rule_raises_and_its_twin_does_not(
    code: str, bad: tuple[str, str | None, str], good: tuple[str, str | None, str]
) -> None:
    raised = media(*bad)
    assert code in codes(raised), [f.message for f in raised.findings]
    hit = [f for f in raised.findings if f.code == code]
    assert all(f.rfc and f.refs for f in hit)
    assert all(r.frame in (1, 2) for f in hit for r in f.refs)
    assert code not in codes(media(*good))


def test_every_code_has_a_case_and_is_documented() -> None:
    covered = {c[0] for c in CASES} | {"sdp.malformed_body"}
    assert covered == set(CODES)
    doc = DOCS.read_text(encoding="utf-8")
    documented = set(re.findall(r"^### `(sdp\.[a-z_]+)`", doc, re.M))
    assert set(CODES) <= documented


def test_unreadable_multipart_body_and_its_readable_twin() -> None:
    bad = media(sdp(PLAIN), sdp(PLAIN), ctype="multipart/mixed")
    assert "sdp.malformed_body" in codes(bad) and not bad.exchanges
    part = "--b1\r\nContent-Type: application/sdp\r\n\r\n" + sdp(PLAIN) + "\r\n--b1--\r\n"
    good = media(part, part, ctype="multipart/mixed;boundary=b1")
    assert "sdp.malformed_body" not in codes(good)
    assert good.summary == "PCMA/8000, DTMF 101"


def test_direction_hold_summary_and_port_zero_stream() -> None:
    offer = sdp(
        m("RTP/AVP", "8", "a=sendonly"), m("RTP/AVP", "31", port=5000).replace("audio", "video")
    )
    answer = sdp(m("RTP/AVP", "8", "a=recvonly"), "m=video 0 RTP/AVP 31\r\n")
    cm = media(offer, answer)
    assert cm.summary == "PCMA/8000, recvonly"
    assert [ln.rejected for ln in cm.exchanges[0].lines] == [False, True]
    assert not codes(cm)


def test_rejection_lists_both_codec_sets() -> None:
    cm = media(sdp(PLAIN), sdp(m("RTP/AVP", "18", "a=rtpmap:18 G729/8000")), "488")
    (f,) = [f for f in cm.findings if f.code == "sdp.offer_rejected"]
    assert "PCMA/8000, telephone-event/8000" in f.message and "G729/8000" in f.message
    assert f.severity is Severity.WARNING and f.rfc == "RFC 3261 §21.4.26"
    assert cm.summary.startswith("rejected 488")


# -- the seed trace -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def seed() -> dict[str, CallMedia]:
    if not SEED.exists():
        pytest.skip(f"{SEED} absent (../shared not on this machine)")
    return {c.call_ids[0]: media_for_call(c) for c in run_calls(seed_messages())}


OUTBOUND = "6a827514-c72b-1237-8aab-02a933b32da0"
INBOUND = "94385YTY3ODNlNzE1YjE5MmY4NmQ3ZWUyZDAzM2E0YzBkM2I"


def test_seed_outbound_leg_selects_aes_256_tag_3(seed: dict[str, CallMedia]) -> None:
    out = seed[OUTBOUND]
    assert out.summary == "PCMA/8000 20ms, DTMF 101, SRTP AES_CM_256_HMAC_SHA1_80 tag 3"
    final = out.exchanges[-1]
    assert (final.offer_in, final.answer_in, final.status) == ("INVITE", "200", "answered")
    assert [r.frame for r in final.offer_frames] == [333]  # the INVITE after the 407
    assert [r.frame for r in final.answer_frames] == [395]
    audio_line, second = final.lines
    assert audio_line.srtp.value == "sdes" and audio_line.crypto is not None
    assert (audio_line.crypto.tag, audio_line.crypto.suite) == (3, "AES_CM_256_HMAC_SHA1_80")
    assert audio_line.crypto.keys[0].key_salt_len == 46
    assert [c.label for c in audio_line.codecs] == ["PCMA/8000", "telephone-event/8000"]
    assert audio_line.answer_addr == "18.212.123.47:33516"
    assert second.rejected and second.answer_proto == "RTP/SAVP"
    assert out.exchanges[0].status == "rejected" and out.exchanges[0].final_status == 407


def test_seed_inbound_leg_is_plain_rtp_avp_pcma(seed: dict[str, CallMedia]) -> None:
    inb = seed[INBOUND]
    assert inb.summary == "PCMA/8000 20ms, DTMF 101"
    (x,) = inb.exchanges
    (line,) = x.lines
    assert (line.offer_proto, line.answer_proto, line.srtp.value) == ("RTP/AVP", "RTP/AVP", "none")
    assert line.offer_addr == "192.168.1.23:49874"


def test_seed_findings(seed: dict[str, CallMedia]) -> None:
    out = {(f.code, tuple(r.frame for r in f.refs)): f for f in seed[OUTBOUND].findings}
    prof = out[("sdp.profile_mismatch", (333, 395))]
    assert "m-line 2: offered RTP/AVP, answered RTP/SAVP" in prof.message
    empty = out[("sdp.malformed_line", (395,))]
    assert "a=rtpmap:19" in empty.message
    (te,) = seed[INBOUND].findings
    assert te.code == "sdp.telephone_event_mismatch"
    assert "offer 0-15" in te.message and "answer 0-16" in te.message
    assert [r.frame for r in te.refs] == [69, 543]
    assert te.severity is Severity.INFO  # only flash (16) differs: every digit travels


def test_seed_json_and_rows_carry_no_key(seed: dict[str, CallMedia]) -> None:
    out = seed[OUTBOUND]
    text = json.dumps(out.to_dict()) + json.dumps([f.to_dict() for f in out.findings])
    for key in ("SG5rYx3GSR2imutYQ", "/itE1k5BLMoTNzo7YEv6hCyM6R6"):
        assert key not in text
    streams = out.to_dict()["exchanges"][-1]["streams"]
    assert streams[0]["srtp"]["tag"] == 3 and streams[0]["dtmf"]["pt"] == 101
    rows = sdp_rows(7, out)
    assert len(rows) == sum(len(x.lines) for x in out.exchanges) == 4
    assert all(tuple(r) == SDP_COLUMNS and r["call"] == 7 for r in rows)
    assert rows[-2]["suite"] == "AES_CM_256_HMAC_SHA1_80" and rows[-2]["key_salt_len"] == 46


def test_telephone_event_mismatch_is_a_warning_only_when_a_digit_is_missing() -> None:
    flash = media(sdp(m("RTP/AVP", "8 101", *TE, F15)), sdp(m("RTP/AVP", "8 101", *TE, F16)))
    digits = media(
        sdp(m("RTP/AVP", "8 101", *TE, F15)), sdp(m("RTP/AVP", "8 101", *TE, "a=fmtp:101 0-11"))
    )
    (a,) = [f for f in flash.findings if f.code == "sdp.telephone_event_mismatch"]
    (b,) = [f for f in digits.findings if f.code == "sdp.telephone_event_mismatch"]
    assert (a.severity, b.severity) == (Severity.INFO, Severity.WARNING)
    assert "both carry the DTMF digits" in a.message and "both carry" not in b.message
