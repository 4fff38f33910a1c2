"""Malformed and partial logs never raise; paste artefacts give the same messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from sipflow.findings import Finding
from sipflow.ingest.pbxlog import LogMessage, detect, read_log_bytes
from sipflow.ingest.types import SourceStats
from sipflow.sip.message import parse_message

DATA = Path(__file__).resolve().parents[2] / "data" / "pbxlog"
SEED = (DATA / "freeswitch_seed_call_routing_article.txt").read_bytes()


def _read(
    data: bytes, fmt: str | None = None
) -> tuple[list[LogMessage], list[Finding], SourceStats]:
    stats, findings = SourceStats("mem"), []
    items = list(read_log_bytes(data, 0, stats, findings, fmt))
    msgs = [i for i in items if isinstance(i, LogMessage)]
    for m in msgs:
        parse_message(m.data, m.origin)
    return msgs, findings, stats


def _datas(data: bytes, fmt: str | None = None) -> list[bytes]:
    return [m.data for m in _read(data, fmt)[0]]


def test_cut_at_every_line_of_a_block() -> None:
    """The seed cut after each line of its first siptrace block (lines 67-92)."""
    lines = SEED.splitlines(keepends=True)
    whole = _datas(b"".join(lines[:92]), "freeswitch")
    assert len(whole) == 1
    for n in range(66, 93):
        msgs, findings, _ = _read(b"".join(lines[:n]), "freeswitch")
        if n <= 68:  # trace line without its message (or not even the trace line)
            assert msgs == []
            assert ("log.unframed_sip" in {f.code for f in findings}) == (n >= 67)
        else:
            assert len(msgs) == 1 and whole[0].startswith(msgs[0].data.split(b"\r\n")[0])


def test_garbage_between_blocks_and_random_bytes() -> None:
    lines = SEED.splitlines(keepends=True)
    junk = b"\x00\xff\xfe garbage SIP/2.0 \x1b[31m\n<--- --->\n"
    junk += b"recv 12 bytes from udp/[x]:1 at 1:2:3:\n"
    mixed = b"".join(lines[:93]) + junk * 3 + b"".join(lines[93:])
    assert _datas(mixed, "freeswitch") == _datas(SEED)
    for fmt in (
        "freeswitch",
        "asterisk-pjsip",
        "asterisk-chansip",
        "ngrep",
        "kamailio",
        "sip-text",
    ):
        _read(bytes(range(256)) * 50 + SEED[:5000], fmt)
        _read(b"", fmt)
        _read(b"INVITE sip:a SIP/2.0", fmt)


def test_windows_line_endings_give_the_same_messages() -> None:
    crlf = SEED.replace(b"\n", b"\r\n")
    assert _datas(crlf) == _datas(SEED)


def test_blank_line_doubled_paste_gives_the_same_messages() -> None:
    doubled = SEED.replace(b"\n", b"\n\n")
    msgs, findings, stats = _read(doubled)
    assert [m.data for m in msgs] == _datas(SEED)
    assert "log.doubled_lines" in {f.code for f in findings}
    # line numbers point into the doubled file: line n became 2n-1
    assert msgs[0].origin.frames[0] == 2 * 67 - 1
    assert stats.frames == 2 * 593


def test_unescaped_copy_gives_the_same_messages() -> None:
    plain = SEED.replace(b"&gt;", b">").replace(b"&lt;", b"<")
    msgs, findings, _ = _read(plain)
    assert [m.data for m in msgs] == _datas(SEED)
    assert "log.html_escaped" not in {f.code for f in findings}


@pytest.mark.parametrize(
    ("name", "count"),
    [
        ("asterisk_chansip_debug_subscribe_presence.log", 6),
        ("asterisk_chansip_presencestate_notify.log", 2),
        ("asterisk_pjsip_logger_invite_sipp_single.log", 1),
    ],
)
def test_asterisk_copies(name: str, count: int) -> None:
    data = (DATA / name).read_bytes()
    msgs, _, stats = _read(data)
    assert len(msgs) == count and stats.format == detect(data)
    for m in msgs:
        assert m.origin.src is not None and m.origin.dst is not None
        assert not parse_message(m.data, m.origin).problems or b"Content-Length" in m.data


def test_ngrep_dots_and_kamailio_xlog() -> None:
    ngrep = (
        b"U 2016/09/06 15:14:03.123456 10.0.0.1:5060 -> 10.0.0.2:5062\n"
        b"OPTIONS sip:b@10.0.0.2 SIP/2.0.\nVia: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK1.\n"
        b"Call-ID: x.\nCSeq: 1 OPTIONS.\nContent-Length: 0.\n.\n\n#\n"
    )
    msgs, _, stats = _read(ngrep)
    assert stats.format == "ngrep" and len(msgs) == 1
    assert msgs[0].data.endswith(b"Call-ID: x\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n")
    assert str(msgs[0].origin.src) == "10.0.0.1:5060"
    xlog = (
        b"Jan 12 12:52:20 host /usr/sbin/kamailio[797]: INFO: <script>: from udp:1.2.3.4:5060 "
        b"BYE sip:a@b SIP/2.0#015#012Via: SIP/2.0/UDP 1.2.3.4#015#012Call-ID: y#015#012"
        b"Content-Length: 0#015#012#015#012\n"
    )
    msgs, _, stats = _read(xlog)
    assert stats.format == "kamailio" and len(msgs) == 1
    assert (
        msgs[0].data == b"BYE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP 1.2.3.4\r\n"
        b"Call-ID: y\r\nContent-Length: 0\r\n\r\n"
    )
    assert str(msgs[0].origin.src) == "1.2.3.4:5060"


def test_detect() -> None:
    assert detect(b"\xd4\xc3\xb2\xa1" + b"\x00" * 20) is None
    assert detect(b"\x0a\x0d\x0d\x0a" + b"\x00" * 20) is None
    assert detect(b"hello world\nnothing to see\n") is None
    assert detect(SEED) == "freeswitch"
    assert (
        detect(b"<--- Received SIP request (5 bytes) from UDP:1.2.3.4:5060 --->\n")
        == "asterisk-pjsip"
    )
    assert detect(b"INVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP x\r\n") == "sip-text"
