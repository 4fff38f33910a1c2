"""Every SDP in the corpus captures and in SIPp-made captures: no crash, byte-exact round
trip, and the parsed m=/a=/c= lines equal to what tshark 4.0 (the independent oracle)
decodes from the same frames.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from functools import cache
from pathlib import Path

import pytest
from sdp_flows import PCAPS

import sipflow
from sipflow.checks.sdp import media_for_call, sdp_rows
from sipflow.errors import ParseError
from sipflow.sdp.model import Sdp, parse_sdp, serialise
from sipflow.sdp.offer_answer import message_sdp
from sipflow.sip.message import SipMessage

pytestmark = pytest.mark.corpus

CAPTURE_SUFFIXES = {".pcap", ".pcapng", ".cap"}


def captures() -> list[Path]:
    if not PCAPS.is_dir():
        return []
    return sorted(p for p in PCAPS.iterdir() if p.suffix in CAPTURE_SUFFIXES)


@cache
def analysed(path: Path) -> sipflow.Trace:
    return sipflow.analyze([path])


def sdp_messages(trace: sipflow.Trace) -> list[tuple[SipMessage, bytes]]:
    out = []
    for m in trace.message_list:
        try:
            body = message_sdp(m)
        except ParseError:  # an unreadable multipart: a finding, checked in tests/checks
            continue
        if body is not None:
            out.append((m, body))
    return out


@pytest.mark.parametrize("path", captures(), ids=lambda p: p.name)
def test_corpus_sdp_round_trips_and_calls_analyse(path: Path) -> None:
    trace = analysed(path)
    for _, body in sdp_messages(trace):
        assert serialise(parse_sdp(body)) == body
    for n, call in enumerate(trace.call_records):
        media = media_for_call(call)
        json.dumps(media.to_dict())
        json.dumps([f.to_dict() for f in media.findings])
        rows = sdp_rows(n, media)
        assert len(rows) == sum(len(x.lines) for x in media.exchanges)


def test_corpus_holds_many_sdp_bodies() -> None:
    if not captures():
        pytest.skip(f"{PCAPS} absent (../shared corpus not on this machine)")
    total = sum(len(sdp_messages(analysed(p))) for p in captures())
    assert total > 1000  # 1651 at the time of writing (branch-scenario alone has ~1300)


# -- tshark cross-check ---------------------------------------------------------------------

TSHARK_FILES = [
    "goffinet__sip-phone-to-phone.pcapng",
    "heplify__FAX-Call-t38-CA-TDM-SIP-FB-1.pcap",
    "sipnab__h263-over-rtp.pcap",
    "goffinet__sip-2phones-B2BUA-Asterisk.pcapng",
    "sipnab__Asterisk_ZFONE_XLITE.pcap",
]


def tshark_sdp(path: Path) -> dict[int, tuple[list[str], list[str], list[str]]]:
    argv = [
        "tshark",
        "-n",
        "-r",
        str(path),
        "-Y",
        "sip && sdp",
        "-T",
        "fields",
        "-E",
        "separator=/t",
    ]
    argv += ["-E", "aggregator=\x1e", "-e", "frame.number", "-e", "sdp.media"]
    argv += ["-e", "sdp.media_attr", "-e", "sdp.connection_info"]
    text = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=True).stdout
    out = {}
    for line in filter(None, text.split("\n")):  # not splitlines(): \x1e is a line break
        num, media, attrs, conns = line.split("\t")
        out[int(num)] = tuple(x.split("\x1e") if x else [] for x in (media, attrs, conns))
    return out  # type: ignore[return-value]


def ours(sdp: Sdp) -> tuple[list[str], list[str], list[str]]:
    media = [ln.value for ln in sdp.lines if ln.type == "m"]
    attrs = [ln.value for sec in sdp.media for ln in sec.lines if ln.type == "a"]
    conns = [ln.value for ln in sdp.lines if ln.type == "c"]
    return media, attrs, conns


@pytest.mark.parametrize("name", TSHARK_FILES)
def test_parsed_lines_match_tshark(name: str) -> None:
    path = PCAPS / name
    if not path.exists():
        pytest.skip(f"{path} absent (../shared corpus not on this machine)")
    if shutil.which("tshark") is None:
        pytest.skip("tshark not installed")
    theirs = tshark_sdp(path)
    mine = {
        m.origin.frames[-1]: ours(parse_sdp(b)) for m, b in sdp_messages(analysed(path)) if m.origin
    }
    shared = set(theirs) & set(mine)
    # every SDP we read is one tshark decodes too (we drop duplicate captures, tshark not)
    assert len(shared) >= 2 and set(mine) <= set(theirs)
    for frame in sorted(shared):
        assert mine[frame] == theirs[frame], frame
    # and the typed view agrees with the text tshark shows
    for frame in sorted(shared):
        for text, sec in zip(theirs[frame][0], parse_sdp_of(path, frame).media, strict=True):
            assert sec.m is not None
            assert text.split()[:3] == [sec.m.media, str(sec.m.port), sec.m.proto]


def parse_sdp_of(path: Path, frame: int) -> Sdp:
    for m, body in sdp_messages(analysed(path)):
        if m.origin and m.origin.frames[-1] == frame:
            return parse_sdp(body)
    raise AssertionError(frame)


# -- SDPs made by SIPp ----------------------------------------------------------------------


def test_sipp_sdp_offer_answer(tmp_path: Path) -> None:
    import os

    from peers.harness import Scenario, missing_tools, run_scenario

    missing = missing_tools(("sipp", "tcpdump"))
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)}")
    if os.geteuid() != 0:
        pytest.skip("capturing on lo with tcpdump needs root")
    run = run_scenario(Scenario("sdp-sipp-builtin", "uac", "uas", calls=5, rate=20), tmp_path)
    (cap,) = run.captures.values()
    trace = sipflow.analyze([cap])
    bodies = sdp_messages(trace)
    assert len(bodies) >= 10  # an offer in each INVITE, an answer in each 200
    for _, body in bodies:
        s = parse_sdp(body)
        assert serialise(s) == body and not s.problems
    assert len(trace.call_records) == 5
    for call in trace.call_records:
        media = media_for_call(call)
        (x,) = media.exchanges
        assert (x.offer_in, x.answer_in, x.status) == ("INVITE", "200", "answered")
        assert x.lines[0].codecs[0].label == "PCMU/8000"
        assert media.summary.startswith("PCMU/8000")
        assert not media.findings
