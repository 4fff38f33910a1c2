"""RFC 4475 torture messages through parse_message / serialise.

Every message of RFC 4475 §3.1.1 (valid), §3.1.2 (invalid), §3.2, §3.3 and §3.4 is in
tests/data/sip/rfc4475/ (see its README). The expectation per message is what the RFC
says: valid ones parse with no problem (or only the one the RFC itself points out),
invalid ones raise ParseError or carry a problem code naming what the RFC says is wrong.
Codes are compared as exact sets, so a new false positive fails too.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from sipflow.errors import ParseError
from sipflow.sip.message import ProblemCode as P
from sipflow.sip.message import SipRequest, SipResponse, parse_message, serialise

DATA = Path(__file__).resolve().parents[1] / "data" / "sip" / "rfc4475"

# name -> (RFC 4475 section, expected problem codes, or ParseError)
EXPECTED: dict[str, tuple[str, frozenset[P] | type[ParseError]]] = {
    # §3.1.1 valid messages
    "wsinv": ("3.1.1.1", frozenset()),
    "intmeth": ("3.1.1.2", frozenset()),
    "esc01": ("3.1.1.3", frozenset()),
    "escnull": ("3.1.1.4", frozenset()),
    "esc02": ("3.1.1.5", frozenset()),
    "lwsdisp": ("3.1.1.6", frozenset()),
    "longreq": ("3.1.1.7", frozenset()),
    # valid, and the RFC's point is exactly the octets after Content-Length (§18.3)
    "dblreq": ("3.1.1.8", frozenset({P.TRAILING_OCTETS})),
    "semiuri": ("3.1.1.9", frozenset()),
    "transports": ("3.1.1.10", frozenset()),
    "mpart01": ("3.1.1.11", frozenset()),
    "unreason": ("3.1.1.12", frozenset()),
    "noreason": ("3.1.1.13", frozenset()),
    # §3.1.2 invalid messages
    "badinv01": ("3.1.2.1", frozenset({P.BAD_VIA, P.BAD_ADDRESS})),
    "clerr": ("3.1.2.2", frozenset({P.CONTENT_LENGTH_MISMATCH})),
    "ncl": ("3.1.2.3", frozenset({P.BAD_CONTENT_LENGTH})),
    "scalar02": ("3.1.2.4", frozenset({P.BAD_CSEQ, P.BAD_MAX_FORWARDS, P.SCALAR_RANGE})),
    "scalarlg": ("3.1.2.5", frozenset({P.BAD_CSEQ, P.SCALAR_RANGE})),
    "quotbal": ("3.1.2.6", frozenset({P.BAD_ADDRESS})),
    "ltgtruri": ("3.1.2.7", frozenset({P.BAD_URI})),
    "lwsruri": ("3.1.2.8", frozenset({P.START_LINE, P.BAD_URI})),
    "lwsstart": ("3.1.2.9", frozenset({P.START_LINE})),
    "trws": ("3.1.2.10", frozenset({P.START_LINE})),
    "escruri": ("3.1.2.11", frozenset({P.BAD_URI})),
    "baddate": ("3.1.2.12", frozenset({P.BAD_DATE})),
    "regbadct": ("3.1.2.13", frozenset({P.BAD_ADDRESS})),
    "badaspec": ("3.1.2.14", frozenset({P.BAD_ADDRESS})),
    "baddn": ("3.1.2.15", frozenset({P.BAD_ADDRESS, P.UNTERMINATED})),
    "badvers": ("3.1.2.16", frozenset({P.VERSION})),
    "mismatch01": ("3.1.2.17", frozenset({P.CSEQ_METHOD})),
    "mismatch02": ("3.1.2.18", frozenset({P.CSEQ_METHOD})),
    "bigcode": ("3.1.2.19", ParseError),
    # §3.2 transaction layer: syntactically fine ("z9hG4bK" alone is a transaction matter)
    "badbranch": ("3.2.1", frozenset()),
    # §3.3 application layer: "a parser must not fail"; only real defects are noted
    "insuf": ("3.3.1", frozenset({P.MISSING_HEADER, P.MISSING_MAX_FORWARDS})),
    "unkscm": ("3.3.2", frozenset()),
    "novelsc": ("3.3.3", frozenset()),
    "unksm2": ("3.3.4", frozenset()),
    "bext01": ("3.3.5", frozenset()),
    "invut": ("3.3.6", frozenset()),
    "regaut01": ("3.3.7", frozenset()),
    "multi01": ("3.3.8", frozenset({P.DUPLICATE_HEADER})),
    "mcl01": ("3.3.9", frozenset({P.DUPLICATE_HEADER, P.TRAILING_OCTETS})),
    "bcast": ("3.3.10", frozenset()),
    "zeromf": ("3.3.11", frozenset()),
    "cparam01": ("3.3.12", frozenset()),
    "cparam02": ("3.3.13", frozenset()),
    "regescrt": ("3.3.14", frozenset()),
    "sdp01": ("3.3.15", frozenset()),
    # §3.4 backward compatibility: RFC 2543 had no Max-Forwards requirement
    "inv2543": ("3.4.1", frozenset({P.MISSING_MAX_FORWARDS})),
}


def _load(name: str) -> bytes:
    return (DATA / f"{name}.dat").read_bytes()


def test_every_file_has_an_expectation() -> None:
    on_disk = {p.stem for p in DATA.glob("*.dat")}
    assert on_disk == set(EXPECTED), on_disk ^ set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED), ids=lambda n: f"{EXPECTED[n][0]}-{n}")
def test_torture_message(name: str) -> None:
    data = _load(name)
    _section, want = EXPECTED[name]
    if not isinstance(want, frozenset):
        with pytest.raises(ParseError):
            parse_message(data)
        return
    msg = parse_message(data)
    assert set(msg.problem_codes) == want, msg.problems
    assert len(msg.problems) == len(msg.problem_codes)
    for text in msg.problems:
        assert "RFC" in text and "§" in text, text  # every problem cites its rule
    assert serialise(msg) == data


def test_wsinv_reads_as_the_rfc_says() -> None:
    msg = parse_message(_load("wsinv"))
    assert isinstance(msg, SipRequest)
    assert msg.to_tag == "1918181833n" and msg.from_tag == "98asjd8"
    assert msg.from_ is not None and msg.from_.display == 'J Rosenberg \\\\\\"'
    assert msg.cseq is not None and (msg.cseq.seq, msg.cseq.method) == (9, "INVITE")
    assert msg.headers.get("max-forwards") == "0068"
    got = [(v.transport, v.host, v.branch) for v in msg.vias]
    assert got == [
        ("UDP", "192.0.2.2", "390skdjuw"),
        ("TCP", "spindle.example.com", "z9hG4bK9ikj8"),
        ("UDP", "192.168.255.111", "z9hG4bK30239"),
    ]
    assert msg.headers.get("subject") == ""  # "s :" compact, empty
    assert msg.headers.get("NewFangledHeader") == "newfangled value continued newfangled value"
    assert msg.headers.get("UnknownHeaderWithUnusualValue") == ";;,,;;,;"
    (contact,) = msg.contacts
    assert contact.params == {"newparam": "newvalue", "secondparam": "", "q": "0.33"}
    assert len(msg.body) == 150


def test_intmeth_keeps_method_case_and_bytes() -> None:
    msg = parse_message(_load("intmeth"))
    assert isinstance(msg, SipRequest)
    method = "!interesting-Method0123456789_*+`.%indeed'~"
    assert msg.method == method and msg.cseq is not None and msg.cseq.method == method
    assert msg.from_ is not None and msg.from_.tag == "_token~1'+`*%!-."
    assert msg.from_.display == "token1~` token2'+_ token3*%!.-"
    assert msg.top_via is not None and msg.top_via.branch == "z9hG4bK-.!%66*_+`'~"
    value = msg.headers.get("extensionHeader-!.%*+_`'~")
    assert value is not None
    assert value.encode("utf-8", "surrogateescape") == bytes.fromhex("EFBBBFE5A4A7E5819CE99BBB")


def test_dblreq_keeps_only_the_register() -> None:
    data = _load("dblreq")
    msg = parse_message(data)
    assert isinstance(msg, SipRequest) and msg.method == "REGISTER"
    assert msg.body == b""
    assert data.endswith(b"a=rtpmap:31 LPC\r\n\r\n")  # the INVITE is still in raw


def test_semiuri_and_esc01_uris() -> None:
    from sipflow.sip.uri import parse_uri

    semi = parse_message(_load("semiuri"))
    assert isinstance(semi, SipRequest)
    uri = parse_uri(semi.uri)
    assert (uri.user, uri.host, uri.params) == ("user;par=u%40example.net", "example.com", {})
    esc = parse_message(_load("esc01"))
    assert isinstance(esc, SipRequest)
    assert parse_uri(esc.uri).host == "example.net"
    (contact,) = esc.contacts
    assert parse_uri(contact.uri).params == {"%6c%72": "", "n%61me": "v%61lue%25%34%31"}


def test_transports_and_longreq() -> None:
    msg = parse_message(_load("transports"))
    assert [v.transport for v in msg.vias] == ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]
    long = parse_message(_load("longreq"))
    assert len(long.vias) == 34 and long.vias[-1].received == "192.0.2.5"
    assert long.call_id == "longreq.one" + "really" * 20 + "longcallid"


def test_unreason_and_noreason() -> None:
    msg = parse_message(_load("unreason"))
    assert isinstance(msg, SipResponse) and msg.status == 200
    assert msg.reason.encode("utf-8", "surrogateescape").decode() == (
        "= 2**3 * 5**2 но сто девяносто девять - простое"
    )
    empty = parse_message(_load("noreason"))
    assert isinstance(empty, SipResponse) and (empty.status, empty.reason) == (100, "")


def test_problem_texts_name_the_fault() -> None:
    texts = {n: " ".join(parse_message(_load(n)).problems) for n in ("clerr", "mismatch01")}
    assert "9999" in texts["clerr"] and "§18.3" in texts["clerr"]
    assert "'INVITE'" in texts["mismatch01"] and "'OPTIONS'" in texts["mismatch01"]


def _mutations(data: bytes, rng: random.Random) -> list[bytes]:
    out = [data[:n] for n in range(len(data) + 1)]  # every truncation length
    for _ in range(300):  # random byte flips, 1-4 bytes each
        buf = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            buf[rng.randrange(len(buf))] = rng.randrange(256)
        out.append(bytes(buf))
    for _ in range(50):  # random deletions of a slice
        i = rng.randrange(len(data))
        out.append(data[:i] + data[i + rng.randint(1, 40) :])
    return out


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fuzz_never_raises_anything_but_parse_error(name: str) -> None:
    rng = random.Random(f"rfc4475-{name}")
    parsed = 0
    for variant in _mutations(_load(name), rng):
        try:
            msg = parse_message(variant)
        except ParseError:
            continue
        parsed += 1
        assert serialise(msg) == variant
        assert len(msg.problems) == len(msg.problem_codes)
        # the lazily parsed views must not raise either
        _ = (msg.cseq, msg.from_, msg.to, msg.vias, msg.contacts, msg.top_via, msg.call_id)
    assert parsed > 0
