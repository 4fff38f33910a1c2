"""CallBuilder on real flows: SIPp on 127.0.0.1 as the peer, and corpus captures.

SIPp runs a UAS and a UAC scenario generated here for each outcome; the UAC's
``-trace_msg`` log (every message sent and received, with a timestamp) is parsed back
into SipMessages and fed to the CallBuilder. The number of calls, the outcomes, the final
codes and the retransmissions are compared with SIPp's own ``-trace_stat`` and
``-trace_counts`` files. The corpus captures are read with tshark (frame number, time,
addresses, UDP payload), and what each call must be was decided by reading the capture
with ``tshark -Y sip`` (see each test's docstring).
"""

from __future__ import annotations

import csv
import re
import shutil
import socket
import subprocess
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import pytest

from sipflow.correlate.calls import BuilderOutput, CallBuilder, CallRecord, EndedBy, Outcome
from sipflow.ingest.types import Endpoint
from sipflow.sip.message import Origin, SipMessage, parse_message
from sipflow.trace import CALL_FIELDS, call_to_dict

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared"
PCAPS = SHARED / "corpus" / "pcaps"
DDD141 = "ddd141f1d982d8989fb73db754a8fbb7@192.168.1.191"


def run_builder(msgs: list[SipMessage]) -> tuple[list[CallRecord], BuilderOutput]:
    b = CallBuilder()
    total = BuilderOutput()
    for m in msgs:
        total.extend(b.feed(m))
    total.extend(b.finish())
    assert b.open_calls() == 0
    return sorted(total.calls, key=lambda c: c.start), total


# -- corpus captures, read with tshark ------------------------------------------------


def tshark_messages(name: str) -> list[SipMessage]:
    path = PCAPS / name
    if not path.exists():
        pytest.skip(f"{path} absent (../shared corpus not on this machine)")
    if shutil.which("tshark") is None:
        pytest.skip("tshark not installed")
    fields = ["frame.number", "frame.time_epoch", "ip.src", "udp.srcport", "ip.dst"]
    fields += ["udp.dstport", "udp.payload"]
    argv = ["tshark", "-r", str(path), "-Y", "sip && udp", "-T", "fields", "-E", "separator=|"]
    for f in fields:
        argv += ["-e", f]
    text = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=60).stdout
    out = []
    for line in text.splitlines():
        num, ts, src, sport, dst, dport, payload = line.split("|")
        src, dst = src.split(",")[-1], dst.split(",")[-1]  # tunnels (GRE): the inner IP
        ns = int(Decimal(ts) * 1_000_000_000)
        origin = Origin(0, (int(num),), ns, Endpoint(src, int(sport)), Endpoint(dst, int(dport)))
        out.append(parse_message(bytes.fromhex(payload.replace(":", "")), origin))
    return out


def codes(out: BuilderOutput) -> list[str]:
    return [f.code for f in out.findings]


@pytest.mark.corpus
def test_proxy_call_is_one_call_with_two_hops() -> None:
    """SIP-Call-with-Proxy-Server: INVITE 10.33.6.101 -> proxy .102:5080 (frame 1) -> .100
    (frame 3, two Vias); 100/180/200 relayed (frames 2, 4-8), ACK and BYE end to end; the
    BYE (frame 10) comes from .100 with the callee's tag 1c2071048551. 180 reaches the
    caller at 0.121593 s, 200 at 0.725139 s, BYE at 2.957262 s."""
    calls, out = run_builder(tshark_messages("goffinet__SIP-Call-with-Proxy-Server.pcap"))
    assert len(calls) == 1
    c = calls[0]
    assert c.outcome is Outcome.ANSWERED and c.final_code == 200
    assert c.hops == (
        "10.33.6.101:5060 -> 10.33.6.102:5080",
        "10.33.6.102:5080 -> 10.33.6.100:5060",
    )
    assert c.messages == 11 and c.retransmissions == 0 and c.auth_challenges == 0
    assert c.pdd_ms == pytest.approx(121.593, abs=0.01)
    assert c.setup_ms == pytest.approx(725.139, abs=0.01)
    assert c.duration_s == pytest.approx(2.957262 - 0.725139, abs=1e-5)
    assert c.ended_by is EndedBy.CALLEE
    assert [d.state.value for d in c.dialogs] == ["terminated"]
    assert sorted(t.method for t in c.transactions) == ["ACK", "BYE", "INVITE", "INVITE"]
    assert codes(out) == []


def test_call_json_has_every_call_field_in_order() -> None:
    """The JSON of the proxied call above: docs/json.md ``calls[]`` keys in CALL_FIELDS
    order (the CSV columns follow it), enums as their values, tuples as lists, ns times
    as seconds."""
    (c,), _ = run_builder(tshark_messages("goffinet__SIP-Call-with-Proxy-Server.pcap"))
    d = call_to_dict(c)
    assert list(d) == list(CALL_FIELDS)
    assert d["outcome"] == "answered" and d["ended_by"] == "callee"
    assert d["hops"] == list(c.hops) and d["call_ids"] == list(c.call_ids)
    assert d["start"] == round(c.start / 1e9, 6) and d["end"] == round(c.end / 1e9, 6)
    assert (d["messages"], d["final_code"], d["final_reason"]) == (11, 200, "OK")


@pytest.mark.corpus
def test_sbc_that_keeps_the_call_id_but_rewrites_the_from_tag() -> None:
    """erspan_sip_ipv4_udp (ERSPAN copy of an SBC's two sides): INVITE Call-ID ddd141...
    from the PBX 192.168.1.191 to the SBC (frame 21, From tag 44ff2eb1...) and on to the
    phone 180.173.83.248:53221 (frame 25, From tag 00E4EF38-44ff2eb1...: the SBC prefixes
    the tag). 200 to the PBX at frame 32 (17.042637 s), ACK frame 33; the phone's hold
    re-INVITE becomes the SBC's re-INVITE to the PBX (frame 47, tags swapped), REFER
    407/488, then the phone's BYE (frame 120) relayed to the PBX (frame 121, 31.519624 s,
    From tag 2DEF4136...: the callee). Each side is a call of its own (two From tags); the
    in-dialog requests of the PBX side must reach that side's call even though the
    phone side's INVITE came later (RFC 3261 §12.2.2): before, they all went to the newest
    call of the Call-ID and the PBX side showed 0 s, ended by none, never ACKed."""
    calls, out = run_builder(tshark_messages("heplify__erspan_sip_ipv4_udp.pcapng"))
    pbx = [
        c
        for c in calls
        if c.call_ids == (DDD141,) and c.caller_tag == "44ff2eb19c8ae9a0ef659ad5b8c55fc1"
    ]
    assert len(pbx) == 1
    c = pbx[0]
    assert c.outcome is Outcome.ANSWERED and c.ended_by is EndedBy.CALLEE
    assert c.duration_s == pytest.approx(31.519624 - 17.042637, abs=1e-6)
    assert c.dialogs[0].reinvites == 1
    assert "sip.no_ack" not in codes(out) and "sip.unknown_dialog" not in codes(out)
    assert {t.method for t in out.activity} == {"NOTIFY", "SUBSCRIBE"}  # no ACK/BYE/INVITE


BF3880 = "bf3880-0-16e4-5af571fa-38bc4ba4-5af571fa@101.231.48.19"


@pytest.mark.corpus
def test_sbc_retry_with_a_new_from_tag_is_the_same_attempt() -> None:
    """erspan_sip_ipv4_udp, Call-ID bf3880...: the SBC's inside INVITE CSeq 1 (frame 55,
    From tag 00E4EF38-...-4ec53b84-45186f0a) gets 407 (frame 57) and ACK (58); its retry
    CSeq 2 (frame 63) carries Proxy-Authorization but a new From tag (...-4ec53bd0-
    57b3aab6), then 100/180/200/ACK, a re-INVITE and BYE (frames 64-126). The outside side
    (tag be6170-..., frames 53-127) keeps its tag through its own 407 and retry. Two calls
    for the Call-ID, each with one challenge: the inside attempt was an auth-failed call of
    its own (4 messages) and the answered one started at the retry."""
    capture = tshark_messages("heplify__erspan_sip_ipv4_udp.pcapng")
    msgs = [m for m in capture if m.call_id == BF3880]
    calls, _ = run_builder(msgs)
    assert len(calls) == 2
    at = {m.origin.frames[0]: m.ts for m in msgs if m.origin is not None}
    inside = next(c for c in calls if "4ec53b" in (c.caller_tag or ""))
    outside = next(c for c in calls if c is not inside)
    assert (outside.caller_tag or "").startswith("be6170-")
    assert (outside.start, inside.start) == (at[53], at[55])  # the inside call: from CSeq 1
    for c in calls:
        assert (c.outcome, c.final_code, c.auth_challenges) == (Outcome.ANSWERED, 200, 1)
    assert inside.caller_tag.endswith("4ec53bd0-57b3aab6")
    assert inside.ended_by is EndedBy.CALLER  # the BYE (frame 125) has the new tag
    assert inside.messages == sum(1 for m in msgs if m.from_tag and "4ec53b" in m.from_tag)


@pytest.mark.corpus
def test_three_invites_one_dialog_acks_and_duration() -> None:
    """DTMFsipinfo: one UA sends INVITE CSeq 1, 2, 3 with one Call-ID and From tag (frames
    1, 2, 5) and CANCELs 2 and 3; each gets 200 with the same To tag (frames 4, 10, 14)
    and its ACK (frames 9, 11, 16). INVITE 3 came after 200 to INVITE 1, so it is a new
    attempt (a second call record); INFOs and two re-INVITEs from the far end follow up
    to frame 32 (78.474440 s after frame 1), no BYE. Every 2xx was ACKed; the first call's
    duration runs from its 200 (frame 4, 0.090748 s) to its last message."""
    msgs = tshark_messages("sipnab__DTMFsipinfo.pcap")
    calls, out = run_builder(msgs)
    assert len(calls) == 2
    assert "sip.no_ack" not in codes(out) and "sip.unknown_dialog" not in codes(out)
    t0 = msgs[0].ts
    first = calls[0]
    assert (first.answer - t0) / 1e9 == pytest.approx(0.090748, abs=1e-6)
    assert first.duration_s == pytest.approx(78.474440 - 0.090748, abs=1e-6)


@pytest.mark.corpus
def test_bye_after_a_rejected_call_names_its_frame() -> None:
    """branch-scenario-sipp, Call-ID 1-4461@127.0.1.1: INVITE (frame 3), 180 with To tag
    (frame 4), 403 (frame 5), then a BYE for the early dialog the 403 ended (frame 6,
    answered 200 at frame 7, where RFC 3261 §12.2.2 wants 481). The finding must point
    at the BYE and say why the dialog was over."""
    _, out = run_builder(
        [
            m
            for m in tshark_messages("goffinet__branch-scenario-sipp.pcapng")
            if m.call_id == "1-4461@127.0.1.1"
        ]
    )
    (f,) = [f for f in out.findings if f.code == "sip.dialog_unexpected"]
    assert [r.frame for r in f.refs] == [6]
    assert "terminated (it ended: rejected)" in f.message


@pytest.mark.corpus
def test_b2bua_legs_and_auth_retry() -> None:
    """sip-2phones-B2BUA-Asterisk: A leg (Call-ID M2Q0...) INVITE CSeq 1 -> 401 -> ACK ->
    INVITE CSeq 2 with Authorization -> 100/180/200 -> ACK, re-INVITE from Asterisk, BYE
    from the caller (frame 404): 13 messages. B leg (new Call-ID 37686afc...): INVITE sent
    twice (frames 24, 25), 100 twice, 180, 200, ACK, two re-INVITEs, BYE from Asterisk
    (the B leg's caller): 15 messages, 2 retransmissions. REGISTER/PUBLISH/SUBSCRIBE are
    activity."""
    calls, out = run_builder(tshark_messages("goffinet__sip-2phones-B2BUA-Asterisk.pcapng"))
    assert [c.call_ids[0][:8] for c in calls] == ["M2Q0ZDc1", "37686afc"]
    a, b = calls
    assert (a.outcome, a.final_code, a.auth_challenges) == (Outcome.ANSWERED, 200, 1)
    assert (a.messages, a.retransmissions, a.ended_by) == (13, 0, EndedBy.CALLER)
    assert (b.outcome, b.auth_challenges) == (Outcome.ANSWERED, 0)
    assert (b.messages, b.retransmissions, b.ended_by) == (15, 2, EndedBy.CALLER)
    assert a.dialogs[0].reinvites == 1 and b.dialogs[0].reinvites == 2
    methods = sorted({t.method for t in out.activity})
    assert methods == ["PUBLISH", "REGISTER", "SUBSCRIBE"]
    assert len(out.activity) == 4 + 3 + 9  # tshark: 4 REGISTER, 3 PUBLISH, 9 SUBSCRIBE
    assert "sip.orphan_response" not in codes(out)


@pytest.mark.corpus
def test_downed_ata_serial_forks_and_unknown_cancel() -> None:
    """voip-extension2downata: INVITE 192.168.5.10 -> PBX .5 (frame 3); the PBX hunts
    L1-a..L1-d on the dead ATA .2 (4 new branches, each sent 3 times, no answer), then
    answers itself: 200 at frame 21 (21.554851 s after frame 1; INVITE at 7.477406 s);
    BYE from the PBX (callee tag 7fb6b923bb, frame 403) without a branch (RFC 2543 key).
    Frames 1, 2, 7, ...: one CANCEL (Call-ID 496ef3d0...) re-sent 7 times for an INVITE not
    in the capture."""
    calls, out = run_builder(tshark_messages("goffinet__voip-extension2downata.pcap"))
    assert len(calls) == 1
    c = calls[0]
    assert c.outcome is Outcome.ANSWERED and c.final_code == 200
    assert c.hops == (
        "192.168.5.10:5060 -> 192.168.5.5:5060",
        "192.168.5.5:1072 -> 192.168.5.2:5060",
    )
    assert c.setup_ms == pytest.approx((21.554851 - 7.477406) * 1000, abs=0.01)
    assert c.pdd_ms is None  # only 100 Trying before the 200
    assert (c.messages, c.retransmissions, c.ended_by) == (18, 8, EndedBy.CALLEE)
    forks = [t for t in c.transactions if t.method == "INVITE" and t.via_count == 2]
    assert len(forks) == 4 and all(t.final_status is None for t in forks)
    cancel = [t for t in out.activity if t.method == "CANCEL"]
    assert len(cancel) == 1 and cancel[0].request_retransmissions == 6
    assert codes(out).count("sip.cancel_unknown") == 1
    assert codes(out).count("sip.invite_timeout") == 4  # the four unanswered forks


@pytest.mark.corpus
def test_aaa_cancel_storm_407_403_480() -> None:
    """sngrep aaa.pcap, the four INVITE Call-IDs read with tshark:
    105090259: INVITE x3 (frames 223-227), 100, CANCEL (frame 247, its Via without port) x11,
      408 to the INVITE (frame 252) after the CANCEL, ACK -> cancelled, final 408;
    85216695: INVITE x3, 407, ACK, INVITE CSeq 2 with Proxy-Authorization, 403 -> auth-failed;
    24487391: INVITE, 407, ACK, INVITE 2, 100, 403, ACK -> auth-failed;
    11894297: INVITE, 407, ACK, INVITE 2, 100, 183 (frame 620), 480 -> no-answer."""
    calls, out = run_builder(tshark_messages("sngrep__aaa.pcap"))
    got = [(c.call_ids[0].split("-")[0], c.outcome, c.final_code, c.auth_challenges) for c in calls]
    assert got == [
        ("105090259", Outcome.CANCELLED, 408, 0),
        ("85216695", Outcome.AUTH_FAILED, 403, 1),
        ("24487391", Outcome.AUTH_FAILED, 403, 1),
        ("11894297", Outcome.NO_ANSWER, 480, 1),
    ]
    assert [c.messages for c in calls] == [18, 8, 7, 8]
    assert [c.retransmissions for c in calls] == [12, 2, 0, 0]
    # PDD of the retried INVITE: frame 617 (1443.024176) to the 183 (1443.450638)
    assert calls[3].pdd_ms == pytest.approx(426.462, abs=0.01)
    # REGISTER: 18 requests in the capture (tshark -Y 'sip.Method==REGISTER'), all distinct
    assert sum(1 for t in out.activity if t.method == "REGISTER") == 18


# -- SIPp on 127.0.0.1 ------------------------------------------------------------------

_HEAD = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="{name}">
"""

_REQ = """  <send{attrs}><![CDATA[
{method} sip:service@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=z9hG4bK-{branch}-[pid]-[call_number]
From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
To: service <sip:service@[remote_ip]:[remote_port]>{to_tag}
Call-ID: [call_id]
CSeq: {cseq} {cseq_method}
Contact: sip:sipp@[local_ip]:[local_port]
Max-Forwards: 70
{extra}Content-Length: 0

]]></send>
"""

_RESP = """  <send><![CDATA[
SIP/2.0 {code} {reason}
[last_Via:]
[last_From:]
[last_To:]{tag}
[last_Call-ID:]
CSeq: {cseq}
Contact: <sip:[local_ip]:[local_port];transport=[transport]>
{extra}Content-Length: 0

]]></send>
"""

REASONS = {
    180: "Ringing",
    200: "OK",
    401: "Unauthorized",
    404: "Not Found",
    480: "Temporarily Unavailable",
    486: "Busy Here",
    487: "Request Terminated",
    503: "Service Unavailable",
}


def uac_xml(final: int, auth: bool, cancel: bool) -> str:
    req = _REQ
    parts = [_HEAD.format(name="uac")]
    invite = dict(
        method="INVITE", attrs=' retrans="500"', to_tag="", cseq_method="INVITE", extra=""
    )
    if auth:
        parts.append(req.format(branch="inv1", cseq=1, **invite))
        parts.append(
            '  <recv response="100" optional="true"/>\n  <recv response="401" auth="true"/>\n'
        )
        ack = dict(invite, method="ACK", attrs="", to_tag="[peer_tag_param]", cseq_method="ACK")
        parts.append(req.format(branch="inv1", cseq=1, **ack))
        auth_line = "[authentication username=alice password=secret]\n"
        parts.append(req.format(branch="inv2", cseq=2, **dict(invite, extra=auth_line)))
    else:
        parts.append(req.format(branch="inv2", cseq=2, **invite))
    parts.append('  <recv response="100" optional="true"/>\n  <recv response="180"/>\n')
    in_dialog = dict(attrs="", to_tag="[peer_tag_param]", extra="")
    if cancel:
        parts.append(
            req.format(
                method="CANCEL", branch="inv2", cseq=2, cseq_method="CANCEL", **in_dialog
            ).replace("[peer_tag_param]", "")
        )
        parts.append('  <recv response="200"/>\n  <recv response="487"/>\n')
        parts.append(
            req.format(method="ACK", branch="inv2", cseq=2, cseq_method="ACK", **in_dialog)
        )
    elif final == 200:
        parts.append('  <recv response="200"/>\n')
        parts.append(req.format(method="ACK", branch="ack", cseq=2, cseq_method="ACK", **in_dialog))
        parts.append('  <pause milliseconds="100"/>\n')
        parts.append(req.format(method="BYE", branch="bye", cseq=3, cseq_method="BYE", **in_dialog))
        parts.append('  <recv response="200"/>\n')
    else:
        parts.append(f'  <recv response="{final}"/>\n')
        parts.append(
            req.format(method="ACK", branch="inv2", cseq=2, cseq_method="ACK", **in_dialog)
        )
    parts.append("</scenario>\n")
    return "".join(parts)


def uas_xml(final: int, auth: bool, cancel: bool, delay_ms: int = 0) -> str:
    tag = ";tag=[pid]SIPpTag01[call_number]"
    parts = [_HEAD.format(name="uas")]
    if auth:
        challenge = 'WWW-Authenticate: Digest realm="sipflow.test", nonce="c2lwZmxvdw"\n'
        parts.append('  <recv request="INVITE"/>\n')
        parts.append(
            _RESP.format(code=401, reason="Unauthorized", tag=tag, cseq="1 INVITE", extra=challenge)
        )
        parts.append('  <recv request="ACK"/>\n')
    parts.append('  <recv request="INVITE"/>\n')
    if delay_ms:  # the UAC's Timer A (T1 = 500 ms) re-sends the INVITE meanwhile
        parts.append(f'  <pause milliseconds="{delay_ms}"/>\n')
    parts.append(_RESP.format(code=180, reason="Ringing", tag=tag, cseq="2 INVITE", extra=""))
    if cancel:
        parts.append('  <recv request="CANCEL"/>\n')
        parts.append(_RESP.format(code=200, reason="OK", tag=tag, cseq="2 CANCEL", extra=""))
        parts.append(
            _RESP.format(code=487, reason="Request Terminated", tag=tag, cseq="2 INVITE", extra="")
        )
        parts.append('  <recv request="ACK"/>\n')
    elif final == 200:
        parts.append('  <pause milliseconds="50"/>\n')
        parts.append(_RESP.format(code=200, reason="OK", tag=tag, cseq="2 INVITE", extra=""))
        parts.append('  <recv request="ACK"/>\n  <recv request="BYE"/>\n')
        parts.append(_RESP.format(code=200, reason="OK", tag="", cseq="3 BYE", extra=""))
    else:
        parts.append(
            _RESP.format(code=final, reason=REASONS[final], tag=tag, cseq="2 INVITE", extra="")
        )
        parts.append('  <recv request="ACK"/>\n')
    parts.append('  <timewait milliseconds="200"/>\n</scenario>\n')
    return "".join(parts)


_ENTRY = re.compile(
    r"^-{20,} (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+)\r?\n(UDP message (sent|received)[^\n]*)\n\r?\n",
    re.M,
)


def parse_sipp_log(text: str, me: Endpoint, peer: Endpoint) -> list[SipMessage]:
    """SIPp ``-trace_msg`` log -> SipMessages (the log's entry number stands for the frame)."""
    heads = list(_ENTRY.finditer(text))
    out = []
    for i, m in enumerate(heads):
        end = heads[i + 1].start() if i + 1 < len(heads) else len(text)
        # SIPp logs what it sent with the scenario's bare LF line ends: CRLF as on the wire
        body = text[m.end() : end].rstrip("\r\n").replace("\r\n", "\n").replace("\n", "\r\n")
        body += "\r\n\r\n" if "\r\n\r\n" not in body else "\r\n"
        ts = int(datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S.%f").timestamp() * 1e6) * 1000
        src, dst = (me, peer) if m.group(3) == "sent" else (peer, me)
        out.append(parse_message(body.encode(), Origin(0, (i + 1,), ts, src, dst)))
    return out


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def last_csv_row(path: Path) -> dict[str, str]:
    with path.open() as f:
        rows = list(csv.reader(f, delimiter=";"))
    return dict(zip(rows[0], rows[-1], strict=False))


def run_sipp(tmp: Path, final: int, auth: bool, cancel: bool, delay_ms: int = 0, calls: int = 3):
    if shutil.which("sipp") is None:
        pytest.skip("sipp not installed (make deb)")
    (tmp / "uac.xml").write_text(uac_xml(final, auth, cancel))
    (tmp / "uas.xml").write_text(uas_xml(final, auth, cancel, delay_ms))
    uas_port, uac_port = free_port(), free_port()
    common = ["-i", "127.0.0.1", "-m", str(calls), "-nostdin", "-timeout", "20", "-timeout_error"]
    uas = subprocess.Popen(
        ["sipp", "-sf", "uas.xml", "-p", str(uas_port), *common, "-trace_err"],
        cwd=tmp,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        uac = subprocess.run(
            [
                "sipp",
                f"127.0.0.1:{uas_port}",
                "-sf",
                "uac.xml",
                "-p",
                str(uac_port),
                *common,
                "-r",
                "20",
                "-au",
                "alice",
                "-ap",
                "secret",
                "-trace_msg",
                "-message_file",
                "uac.log",
                "-trace_stat",
                "-stf",
                "uac_stat.csv",
                "-trace_counts",
                "-trace_err",
            ],
            cwd=tmp,
            capture_output=True,
            text=True,
            timeout=40,
            check=False,
        )
        uas.wait(timeout=20)
    finally:
        if uas.poll() is None:
            uas.kill()
    assert uac.returncode == 0, f"sipp uac failed rc={uac.returncode}: {uac.stderr[-500:]}"
    me, peer = Endpoint("127.0.0.1", uac_port), Endpoint("127.0.0.1", uas_port)
    msgs = parse_sipp_log((tmp / "uac.log").read_text(), me, peer)
    stat = last_csv_row(tmp / "uac_stat.csv")
    counts = last_csv_row(next(tmp.glob("uac_*_counts.csv")))
    return msgs, stat, counts


def count_col(counts: dict[str, str], suffix: str) -> int:
    return sum(int(v) for k, v in counts.items() if k.endswith(suffix) and v.isdigit())


CASES = [
    # final, auth, cancel, UAS delay before 180 (ms), outcome
    (200, False, False, 0, Outcome.ANSWERED),
    (486, False, False, 0, Outcome.BUSY),
    (404, False, False, 0, Outcome.REJECTED),
    (503, False, False, 0, Outcome.REJECTED),
    (480, False, False, 0, Outcome.NO_ANSWER),
    (487, False, True, 0, Outcome.CANCELLED),
    (200, True, False, 0, Outcome.ANSWERED),
    (486, False, False, 700, Outcome.BUSY),
]


@pytest.mark.peers
@pytest.mark.parametrize(("final", "auth", "cancel", "delay", "outcome"), CASES)
def test_sipp_outcomes(
    tmp_path: Path, final: int, auth: bool, cancel: bool, delay: int, outcome: Outcome
) -> None:
    msgs, stat, counts = run_sipp(tmp_path, final, auth, cancel, delay)
    calls, out = run_builder(msgs)
    # SIPp's statistics: calls created and completed
    assert len(calls) == int(stat["TotalCallCreated"]) == 3
    assert int(stat["SuccessfulCall(C)"]) == 3 and int(stat["FailedCall(C)"]) == 0
    assert [c.outcome for c in calls] == [outcome] * 3
    # SIPp's per-message counts: the final received by the UAC, once per call
    final_recv = next(int(v) for k, v in counts.items() if re.fullmatch(rf"\d+_{final}_Recv", k))
    assert sum(1 for c in calls if c.final_code == final) == final_recv
    assert sum(c.retransmissions for c in calls) == count_col(counts, "_Retrans")
    assert (count_col(counts, "_Retrans") > 0) == (delay > 0)
    assert sum(c.messages for c in calls) == len(msgs)
    assert {c.call_ids[0] for c in calls} == {m.call_id for m in msgs}
    assert all(c.auth_challenges == (1 if auth else 0) for c in calls)
    if outcome is Outcome.ANSWERED:
        assert all(c.ended_by is EndedBy.CALLER and c.duration_s for c in calls)
        assert all(c.pdd_ms is not None and c.setup_ms >= c.pdd_ms for c in calls)  # type: ignore[operator]
    assert [f.code for f in out.findings] == []


def _invite(cseq: int, tag: str, ts: int, auth: bool) -> SipMessage:
    creds = 'Proxy-Authorization: Digest username="a",realm="r",nonce="n",uri="sip:b@h"\r\n'
    raw = (
        "INVITE sip:b@192.0.2.2 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK{cseq}{tag}\r\n"
        f"From: <sip:a@h>;tag={tag}\r\nTo: <sip:b@h>\r\nCall-ID: retag\r\n"
        f"CSeq: {cseq} INVITE\r\nMax-Forwards: 70\r\n{creds if auth else ''}"
        "Content-Length: 0\r\n\r\n"
    )
    return parse_message(raw.encode(), Origin(0, (cseq,), ts, Endpoint("192.0.2.1", 5060)))


def _final(req: SipMessage, code: int, ts: int) -> SipMessage:
    head = req.raw.decode().split("\r\n")
    via, frm = head[1], head[2]
    raw = (
        f"SIP/2.0 {code} X\r\n{via}\r\n{frm}\r\nTo: <sip:b@h>;tag=uas\r\nCall-ID: retag\r\n"
        f"{head[5]}\r\nContent-Length: 0\r\n\r\n"
    )
    return parse_message(raw.encode(), Origin(0, (100 + ts,), ts, Endpoint("192.0.2.2", 5060)))


@pytest.mark.parametrize(
    ("first_code", "auth", "calls_expected"),
    [(407, True, 1), (407, False, 2), (486, True, 2)],
)
def test_new_from_tag_joins_only_a_challenged_attempt_with_credentials(
    first_code: int, auth: bool, calls_expected: int
) -> None:
    """A second INVITE of the Call-ID with a new From tag and a higher CSeq continues the
    first attempt only after a 401/407 and when it carries credentials (RFC 3261 §22.2)."""
    s = 1_000_000_000
    first = _invite(1, "t1", 1 * s, False)
    retry = _invite(2, "t2", 2 * s, auth)
    msgs = [first, _final(first, first_code, 1 * s + 1000), retry, _final(retry, 200, 3 * s)]
    calls, _ = run_builder(msgs)
    assert len(calls) == calls_expected
    if calls_expected == 1:
        (c,) = calls
        assert (c.auth_challenges, c.final_code, c.caller_tag) == (1, 200, "t2")
