"""The AES-CM + HMAC-SHA1 SRTP transforms of sipflow.rtp.srtp_cm: the RFC test vectors,
packets of libsrtp (pylibsrtp) both ways for the 128-bit suites that share the code path,
and captures of AES-192/256-CM calls analysed end to end."""

from __future__ import annotations

import base64
import json
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from srtp_capture import PROFILE, SSRC_A, SSRC_B, cm_call, key

from sipflow.api import analyze, decode_audio
from sipflow.rtp.audio import g711_table
from sipflow.rtp.decrypt import StreamDecryptor, tag_length
from sipflow.rtp.srtp_cm import CmSession, SrtpError, cm_suite, derive, estimate_index, keystream
from sipflow.sdp.srtp import sdes_keys

pytestmark = pytest.mark.timeout(120)

# -- RFC test vectors ------------------------------------------------------------------------

# RFC 3711 Appendix B.3 (key derivation, kdr 0, packet index 0)
B3_KEY, B3_SALT = "E1F97A0D3E018BE0D64FA32C06DE4139", "0EC675AD498AFEEBB6960B3AABE6"
B3_CIPHER, B3_SESSION_SALT = "C61E7A93744F39EE10734AFE3FF7A087", "30CBBC08863D8C85D49DB34A9AE1"
B3_AUTH = (
    "CEBE321F6FF7716B6FD4AB49AF256A156D38BAA48F0A0ACF3C34E2359E6CDBCE"
    "E049646C43D9327AD175578EF72270986371C10C9A369AC2F94A8C5FBCDDDC25"
    "6D6E919A48B610EF17C2041E474035766B68642C59BBFC2F34DB60DBDFB2"
)  # 94 octets: the RFC's auth key output (the suites use its first 20)

# RFC 3711 Appendix B.2 and RFC 6188 §7.1 / §7.3: AES-CM key stream from the counter
# F0F1...FD0000 (session salt, SSRC 0, index 0): blocks 0-2 and 0xFEFF-0xFF01.
COUNTER = 0xF0F1F2F3F4F5F6F7F8F9FAFBFCFD0000
KEYSTREAMS = {
    "RFC 3711 B.2 (AES-128)": (
        "2B7E151628AED2A6ABF7158809CF4F3C",
        "E03EAD0935C95E80E166B16DD92B4EB4D23513162B02D0F72A43A2FE4A5F97AB"
        "41E95B3BB0A2E8DD477901E4FCA894C0",
        "EC8CDF7398607CB0F2D21675EA9EA1E4362B7C3C6773516318A077D7FC5073AE"
        "6A2CC3787889374FBEB4C81B17BA6C44",
    ),
    "RFC 6188 §7.1 (AES-256)": (
        "57f82fe3613fd170a85ec93c40b1f0922ec4cb0dc025b58272147cc438944a98",
        "92bdd28a93c3f52511c677d08b5515a49da71b2378a854f67050756ded165bac"
        "63c4868b7096d88421b563b8c94c9a31",
        "cea518c90fd91ced9cbb18c078a547113dbc4814f4da5f00a08772b63c6a046d"
        "6eb246913062a16891433e97dd01a57f",
    ),
    "RFC 6188 §7.3 (AES-192)": (
        "eab234764e517b2d3d160d587d8c86219740f65f99b6bcf7",
        "35096cba4610028dc1b57503804ce37c5de986291dcce161d5165ec4568f5c9a"
        "474a40c77894bc17180202272a4c264d",
        "d108d1a31a00bad6367ec23eb044b415c8f57129fdeb970b59f917b257662d4c"
        "a5dab625811034e8cebdfeb6dc158dd3",
    ),
}

# RFC 6188 §7.2 (AES_256_CM_PRF) and §7.4 (AES_192_CM_PRF): master key, master salt,
# session cipher key, session salt, session auth key.
PRF = {
    "RFC 6188 §7.2 (AES-256)": (
        "f0f04914b513f2763a1b1fa130f10e2998f6f6e43e4309d1e622a0e332b9f1b6",
        "3b04803de51ee7c96423ab5b78d2",
        "5ba1064e30ec51613cad926c5a28ef731ec7fb397f70a960653caf06554cd8c4",
        "fa31791685ca444a9e07c6c64e93",
        "fd9c32d39ed5fbb5a9dc96b30818454d1313dc05",
    ),
    "RFC 6188 §7.4 (AES-192)": (
        "73edc66c4fa15776fb57f9505c17136550ffda71f3e8e5f1",
        "c8522f3acd4ce86d5add78edbb11",
        "31874736a8f1143870c26e4857d8a5b2c4a354407faadabb",
        "2372b82d639b6d8503a47adc0a6c",
        "355b10973cd95b9eacf4061c7e1a7151e7cfbfcb",
    ),
    "RFC 3711 B.3 (AES-128)": (B3_KEY, B3_SALT, B3_CIPHER, B3_SESSION_SALT, B3_AUTH[:40]),
}

h = bytes.fromhex


def b64(material: bytes) -> str:
    return base64.b64encode(material).decode()


def test_rfc3711_b3_key_derivation() -> None:
    mk, ms = h(B3_KEY), h(B3_SALT)
    assert derive(mk, ms, 0, 16) == h(B3_CIPHER)
    assert derive(mk, ms, 2, 14) == h(B3_SESSION_SALT)
    assert derive(mk, ms, 1, 94) == h(B3_AUTH)  # the PRF over several counter blocks


@pytest.mark.parametrize("name", sorted(PRF))
def test_aes_cm_prf_key_derivation(name: str) -> None:
    mk, ms, cipher, salt, auth = (h(x) for x in PRF[name])
    assert derive(mk, ms, 0, len(mk)) == cipher  # RFC 6188 §3: session key = master length
    assert derive(mk, ms, 2, 14) == salt
    assert derive(mk, ms, 1, 20) == auth


@pytest.mark.parametrize("name", sorted(KEYSTREAMS))
def test_aes_cm_keystream(name: str) -> None:
    session_key, first, last = (h(x) for x in KEYSTREAMS[name])
    ks = keystream(session_key, COUNTER, 0xFF02 * 16)
    assert ks[:48] == first and ks[0xFEFF * 16 :] == last


# -- suites, index estimation ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("suite", "key_len", "rtp_tag"),
    [
        ("AES_CM_128_HMAC_SHA1_80", 16, 10),
        ("AES_CM_128_HMAC_SHA1_32", 16, 4),
        ("AES_192_CM_HMAC_SHA1_80", 24, 10),
        ("AES_192_CM_HMAC_SHA1_32", 24, 4),
        ("AES_256_CM_HMAC_SHA1_80", 32, 10),
        ("AES_256_CM_HMAC_SHA1_32", 32, 4),
        ("AES_CM_256_HMAC_SHA1_80", 32, 10),  # FreeSWITCH's names
        ("AES_CM_192_HMAC_SHA1_32", 24, 4),
    ],
)
def test_cm_suites(suite: str, key_len: int, rtp_tag: int) -> None:
    cm = cm_suite(suite)
    assert cm is not None and (cm.key, cm.rtp_tag, cm.rtcp_tag) == (key_len, rtp_tag, 10)
    assert (tag_length(suite, False), tag_length(suite, True)) == (rtp_tag, 10)


@pytest.mark.parametrize("suite", ["AEAD_AES_256_GCM", "F8_128_HMAC_SHA1_80", "NULL_X", ""])
def test_not_cm_suites(suite: str) -> None:
    assert cm_suite(suite) is None and tag_length(suite, False) == 0


@pytest.mark.parametrize(
    ("seq", "top", "index"),
    [
        (5, -1, 5),  # first packet: ROC 0
        (1001, 1000, 1001),
        (2, 65534, 65538),  # wrapped forward: ROC + 1
        (65535, 65538, 65535),  # late packet from before the wrap: ROC - 1
        (40000, 1000, 40000),  # ROC 0 cannot go back
        (7, (3 << 16) | 20, (3 << 16) | 7),
    ],
)
def test_rfc3711_index_estimation(seq: int, top: int, index: int) -> None:
    """RFC 3711 §3.3.1 / Appendix A."""
    assert estimate_index(seq, top) == index


# -- against libsrtp -------------------------------------------------------------------------


def rtp(seq: int, n: int = 160, ssrc: int = 0xCAFEBABE) -> bytes:
    return struct.pack("!BBHII", 0x80, 0, seq & 0xFFFF, 160 * seq, ssrc) + bytes([seq & 0xFF]) * n


def sr(i: int, ssrc: int = 0xCAFEBABE) -> bytes:
    body = struct.pack("!IQIII", ssrc, i << 32, 160 * i, i, 160 * i)
    return struct.pack("!BBH", 0x80, 200, 6) + body


SEQS = [65530 + i for i in range(12)]  # crosses the sequence number wrap (ROC 0 -> 1)


def libsrtp(material: bytes, suite: str, inbound: bool) -> object:
    lib = pytest.importorskip("pylibsrtp", reason="pylibsrtp (dev extra) is the oracle")
    ssrc = lib.Policy.SSRC_ANY_INBOUND if inbound else lib.Policy.SSRC_ANY_OUTBOUND
    return lib.Session(lib.Policy(material, ssrc, 0, getattr(lib.Policy, PROFILE[suite])))


@pytest.mark.parametrize("suite", sorted(PROFILE))
def test_unprotects_what_libsrtp_protects(suite: str) -> None:
    sender, ours = libsrtp(key(1), suite, inbound=False), CmSession(key(1), suite)
    for seq in SEQS:
        clear = rtp(seq, n=seq % 200)
        assert ours.unprotect(sender.protect(clear)) == clear  # type: ignore[attr-defined]
    for i in range(1, 4):
        assert ours.unprotect_rtcp(sender.protect_rtcp(sr(i))) == sr(i)  # type: ignore[attr-defined]
    assert ours.rtp_window.top == (1 << 16) | SEQS[-1] & 0xFFFF  # ROC 1 after the wrap


@pytest.mark.parametrize("suite", sorted(PROFILE))
def test_libsrtp_unprotects_what_we_protect(suite: str) -> None:
    ours, receiver = CmSession(key(2), suite), libsrtp(key(2), suite, inbound=True)
    for seq in SEQS:
        assert receiver.unprotect(ours.protect(rtp(seq))) == rtp(seq)  # type: ignore[attr-defined]
    for i in range(1, 4):
        assert receiver.unprotect_rtcp(ours.protect_rtcp(sr(i))) == sr(i)  # type: ignore[attr-defined]


def test_wrong_key_tampering_and_replay() -> None:
    suite = "AES_CM_128_HMAC_SHA1_80"
    sender = libsrtp(key(1), suite, inbound=False)
    packets = [sender.protect(rtp(s)) for s in (100, 101, 102)]  # type: ignore[attr-defined]
    wrong = CmSession(key(9), suite)
    with pytest.raises(SrtpError, match="auth"):
        wrong.unprotect(packets[0])
    assert wrong.rtp_window.top == -1  # a failed packet moves no state
    ours = CmSession(key(1), suite)
    tampered = bytearray(packets[1])
    tampered[20] ^= 1
    with pytest.raises(SrtpError, match="auth"):
        ours.unprotect(bytes(tampered))
    assert ours.unprotect(packets[1]) == rtp(101)
    with pytest.raises(SrtpError, match="replay"):
        ours.unprotect(packets[1])  # RFC 3711 §3.3.2
    assert ours.unprotect(packets[0]) == rtp(100)  # late but inside the window
    with pytest.raises(SrtpError, match="auth"):
        ours.unprotect(packets[2][:8])  # shorter than a header


def test_replay_window_across_a_jump() -> None:
    """RFC 3711 §3.3.2: a 1024-packet window below the highest index; a jump forward
    leaves everything before it too old."""
    suite = "AES_256_CM_HMAC_SHA1_80"
    sender, ours = CmSession(key(3, 46), suite), CmSession(key(3, 46), suite)
    packets = {seq: sender.protect(rtp(seq)) for seq in (1, 2, 30000, 28977, 28976)}
    assert ours.unprotect(packets[1]) == rtp(1)
    assert ours.unprotect(packets[30000]) == rtp(30000)  # ROC 0: no going back
    assert ours.unprotect(packets[28977]) == rtp(28977)  # 1023 back: inside the window
    for old in (28976, 2):
        with pytest.raises(SrtpError, match="replay"):
            ours.unprotect(packets[old])


def test_stream_decryptor_with_mki_and_several_keys() -> None:
    """The decrypt.py path: candidate keys tried in turn, an MKI stripped (RFC 3711 §3.1)."""
    suite = "AES_256_CM_HMAC_SHA1_32"
    lines = [f"{t} {suite} inline:{b64(key(t, 46))}|2^31|{t}:2" for t in (1, 2)]
    keys = sdes_keys(tuple(lines), ())
    assert keys is not None and keys.offer[1].mki_length == 2
    dec = StreamDecryptor(keys.offer, None)  # no pylibsrtp needed for AES-256
    sender = CmSession(key(2, 46), suite)
    for seq in range(10):
        packet = sender.protect(rtp(seq))
        assert dec.unprotect(packet[:-4] + b"\x00\x02" + packet[-4:], seq) == rtp(seq)
    assert dec.rtp.authenticated == 10 and dec.best_key() is keys.offer[1]


def test_a_key_of_the_wrong_length_fails_authentication() -> None:
    """AES_256 announced with a 30-octet key||salt (an AES-128 one): no session can be
    built, so each packet is an authentication failure, never an exception."""
    suite = "AES_256_CM_HMAC_SHA1_80"
    keys = sdes_keys((f"1 {suite} inline:{b64(key(1))}",), ())
    assert keys is not None
    dec = StreamDecryptor(keys.offer, None)
    packet = CmSession(key(1, 46), suite).protect(rtp(1))
    assert dec.unprotect(packet, 1) is None and dec.unprotect(packet, 2, rtcp=True) is None
    assert (dec.rtp.auth_failed, dec.rtcp.auth_failed, dec.used) == (1, 1, {})


# -- end to end ------------------------------------------------------------------------------


def by_ssrc(trace: object) -> dict[int, object]:
    return {s.ssrc: s for s in trace.rtp_stream_list}  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("suite", "size"),
    [
        ("AES_256_CM_HMAC_SHA1_80", 46),
        ("AES_CM_256_HMAC_SHA1_32", 46),  # FreeSWITCH's name
        ("AES_192_CM_HMAC_SHA1_80", 38),
    ],
)
def test_aes_256_and_192_calls_decrypted(tmp_path: Path, suite: str, size: int) -> None:
    path, a, b = cm_call(tmp_path / "cm.pcap", suite, size=size)
    trace = analyze([path])
    streams = by_ssrc(trace)
    sa, sb = streams[SSRC_A], streams[SSRC_B]
    for st in (sa, sb):
        assert st.srtp["authenticated"] == st.srtp["decrypted"] == st.packets == 100
        assert st.srtp["auth_failed"] == st.srtp["replayed"] == 0
        assert (st.srtp["suite"], st.srtp["tag"], st.srtp["not_decrypted"]) == (suite, 1, None)
        assert st.srtp["srtcp"]["authenticated"] == st.srtp["srtcp"]["packets"] == 2
        assert (st.rtcp["sender_reports"], st.rtcp["sender_packets"]) == (2, 100)
    assert not [f.code for f in trace.finding_list if f.code.startswith("srtp.")]
    samples = decode_audio(str(path), [sa, sb])
    for st, side in ((sa, a), (sb, b)):
        want = g711_table(0)[np.frombuffer(b"".join(side.payloads), np.uint8)]
        assert np.array_equal(samples[st.id], want)


def test_aes_256_wrong_key_is_an_authentication_failure(tmp_path: Path) -> None:
    suite = "AES_256_CM_HMAC_SHA1_80"
    path, _, _ = cm_call(tmp_path / "wrong.pcap", suite, b_sends_with=key(9, 46))
    trace = analyze([path])
    sa, sb = by_ssrc(trace)[SSRC_A], by_ssrc(trace)[SSRC_B]
    assert sa.srtp["authenticated"] == 100
    assert sb.srtp["authenticated"] == 0 and sb.srtp["auth_failed"] == 100
    assert sb.srtp["srtcp"]["auth_failed"] == 2
    failed = [f for f in trace.finding_list if f.code == "srtp.auth_failed"]
    assert len(failed) == 1 and "0x2222BBBB" in failed[0].message


def test_aes_256_decrypted_without_pylibsrtp(tmp_path: Path) -> None:
    """Only the suites pylibsrtp implements need it: in a process where it cannot be
    imported, the AES-256 streams still authenticate and no finding asks to install it."""
    path, _, _ = cm_call(tmp_path / "nolib.pcap", "AES_256_CM_HMAC_SHA1_80")
    script = (
        "import sys, json; sys.modules['pylibsrtp'] = None\n"  # import pylibsrtp fails
        "from sipflow.api import analyze\n"
        f"t = analyze([{str(path)!r}])\n"
        "print(json.dumps([f.code for f in t.finding_list]))\n"
        "print(json.dumps([s.srtp for s in t.rtp_stream_list]))\n"
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=60, check=True)  # fmt: skip
    codes, streams = (json.loads(line) for line in run.stdout.splitlines())
    assert not [c for c in codes if c.startswith("srtp.")]
    assert [s["authenticated"] for s in streams] == [100, 100]
