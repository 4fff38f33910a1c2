"""SRTP and SRTCP with the AES Counter Mode + HMAC-SHA1 transforms (RFC 3711, RFC 6188).

How this works: pylibsrtp (libsrtp) implements only the 128-bit AES-CM suites, so the
suites FreeSWITCH offers first (AES_256_CM_HMAC_SHA1_80/32, AES_192_CM_..., and the
unregistered names AES_CM_256_... / AES_CM_192_...) are unprotected here. The block
cipher and the MAC come from ``cryptography`` (AES in CTR mode, HMAC-SHA1); this module
only does the SRTP protocol around them:

* session keys (RFC 3711 §4.3.1, key derivation rate 0): ``x = (label << 48) XOR
  master_salt``, the key stream of AES-CM under the master key with IV ``x * 2^16``
  (the AES-CM PRF, §4.3.3; RFC 6188 §3 for the 192/256-bit master keys) gives the
  session cipher key (as long as the master key), the 160-bit auth key and the 112-bit
  session salt; labels 0-2 for SRTP, 3-5 for SRTCP (§4.3.2);
* the packet index (§3.3.1, Appendix A): the rollover counter is guessed from the
  sequence number and the highest one authenticated so far; state moves only after a
  packet authenticated;
* authentication (§4.2): HMAC-SHA1 over the authenticated portion || ROC (SRTP) or over
  header || encrypted portion || E || SRTCP index (SRTCP, §3.4), truncated to the tag;
* decryption (§4.1.1): AES-CTR with IV ``(k_s * 2^16) XOR (SSRC * 2^64) XOR (i * 2^16)``;
* replay (§3.3.2): a 1024-packet sliding window per direction, as libsrtp's.

:class:`CmSession` has pylibsrtp's ``Session`` shape (``unprotect`` / ``unprotect_rtcp``
raising :class:`SrtpError`, and ``protect`` / ``protect_rtcp`` for tests), so
:class:`sipflow.rtp.decrypt.StreamDecryptor` uses either. The MKI is stripped by the
caller (:func:`sipflow.rtp.decrypt.strip_mki`).
"""

from __future__ import annotations

import hmac as std_hmac
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sipflow.sdp.srtp import suite_spec

if TYPE_CHECKING:
    from cryptography.hazmat.primitives import hmac
    from cryptography.hazmat.primitives.ciphers import algorithms

# cryptography's primitives are imported where a key is used, not with this module: the
# suite table (cm_suite) is read for every capture with SRTP-looking media, decryption
# only when the SDP shows keys (importing them costs about 30 ms).

__all__ = [
    "CmSession",
    "CmSuite",
    "SrtpError",
    "cm_suite",
    "derive",
    "estimate_index",
    "keystream",
]

SALT = 14
"""Master and session salt octets (RFC 3711 §4.3.1: 112 bits)."""
AUTH_KEY = 20
"""Session authentication key octets (RFC 3711 §4.2.1: n_a = 160)."""
WINDOW = 1024
"""Replay window in packets (RFC 3711 §3.3.2: at least 64; libsrtp's 1024 here)."""
SRTCP_E = 0x80000000
"""The E flag above the 31-bit SRTCP index (RFC 3711 §3.4)."""


class SrtpError(Exception):
    """A packet that cannot be unprotected: its message says ``auth`` or ``replay``."""


@dataclass(frozen=True, slots=True)
class CmSuite:
    """An AES-CM + HMAC-SHA1 suite: master key octets and tag octets."""

    key: int
    rtp_tag: int
    rtcp_tag: int


def cm_suite(name: str) -> CmSuite | None:
    """The AES-CM/HMAC-SHA1 suite of an SDES name, or None (F8, GCM, unknown).
    RFC 4568 §6.2.2 and RFC 6188 §6: the ``_32`` suites keep an 80-bit SRTCP tag."""
    spec = suite_spec(name)
    if spec is None or spec.salt != SALT or "CM" not in name.split("_"):
        return None
    if not name.endswith(("HMAC_SHA1_80", "HMAC_SHA1_32")):
        return None
    return CmSuite(spec.key, 10 if name.endswith("_80") else 4, 10)


def keystream(key: bytes, iv: int, n: int) -> bytes:
    """``n`` octets of AES-CM key stream from the 128-bit counter ``iv`` (RFC 3711 §4.1.1)."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    enc = Cipher(algorithms.AES(key), modes.CTR(iv.to_bytes(16, "big"))).encryptor()
    return enc.update(bytes(n)) + enc.finalize()


def derive(master_key: bytes, master_salt: bytes, label: int, n: int) -> bytes:
    """A session key of ``n`` octets (RFC 3711 §4.3.1 with kdr 0, the AES-CM PRF §4.3.3)."""
    x = (label << 48) ^ int.from_bytes(master_salt, "big")
    return keystream(master_key, x << 16, n)


@dataclass(frozen=True, slots=True)
class _Keys:
    """The session keys of one direction and protocol (SRTP or SRTCP)."""

    cipher: algorithms.AES
    salt: int
    mac: hmac.HMAC
    tag: int


def _session_keys(material: bytes, suite: CmSuite, first_label: int, tag: int) -> _Keys:
    from cryptography.hazmat.primitives import hashes, hmac
    from cryptography.hazmat.primitives.ciphers import algorithms

    mk, ms = material[: suite.key], material[suite.key :]
    cipher = derive(mk, ms, first_label, suite.key)
    auth = derive(mk, ms, first_label + 1, AUTH_KEY)
    salt = int.from_bytes(derive(mk, ms, first_label + 2, SALT), "big")
    return _Keys(algorithms.AES(cipher), salt, hmac.HMAC(auth, hashes.SHA1()), tag)


def _iv(keys: _Keys, ssrc: int, index: int) -> int:
    """RFC 3711 §4.1.1: IV = (k_s * 2^16) XOR (SSRC * 2^64) XOR (i * 2^16)."""
    return (keys.salt << 16) ^ (ssrc << 64) ^ (index << 16)


def _tag(keys: _Keys, data: bytes) -> bytes:
    mac = keys.mac.copy()
    mac.update(data)
    return mac.finalize()[: keys.tag]


def _crypt(keys: _Keys, ssrc: int, index: int, data: bytes) -> bytes:
    from cryptography.hazmat.primitives.ciphers import Cipher, modes

    iv = _iv(keys, ssrc, index).to_bytes(16, "big")
    return Cipher(keys.cipher, modes.CTR(iv)).decryptor().update(data)


def _header_len(packet: bytes) -> int:
    """RTP header octets (RFC 3550 §5.1, §5.3.1: CSRCs and extension), which SRTP leaves
    in clear; raises SrtpError when the packet is shorter."""
    n = 12 + 4 * (packet[0] & 0x0F)
    if packet[0] & 0x10:
        if len(packet) < n + 4:
            raise SrtpError("auth: truncated header extension")
        n += 4 + 4 * int.from_bytes(packet[n + 2 : n + 4], "big")
    if len(packet) < n:
        raise SrtpError("auth: truncated header")
    return n


class _Window:
    """Highest index authenticated and the replay bitmap below it (RFC 3711 §3.3.2)."""

    __slots__ = ("bits", "top")

    def __init__(self) -> None:
        self.top = -1
        self.bits = 0

    def seen(self, index: int) -> bool:
        if self.top < 0 or index > self.top:
            return False
        back = self.top - index
        return back >= WINDOW or bool(self.bits >> back & 1)

    def add(self, index: int) -> None:
        if index > self.top:
            shift = index - self.top if self.top >= 0 else WINDOW
            kept = (self.bits << shift) & ((1 << WINDOW) - 1) if shift < WINDOW else 0
            self.bits = kept | 1
            self.top = index
        else:
            self.bits |= 1 << (self.top - index)


def estimate_index(seq: int, top: int) -> int:
    """The packet index of sequence number ``seq`` given the highest index so far
    (RFC 3711 §3.3.1 and Appendix A; ROC 0 before any packet)."""
    if top < 0:
        return seq
    roc, s_l = top >> 16, top & 0xFFFF
    if s_l < 0x8000:
        v = roc - 1 if seq - s_l > 0x8000 and roc > 0 else roc
    else:
        v = roc + 1 if s_l - 0x8000 > seq else roc
    return (v << 16) | seq


class CmSession:
    """One sender's SRTP and SRTCP under one master key and salt (``material``)."""

    def __init__(self, material: bytes, suite_name: str) -> None:
        suite = cm_suite(suite_name)
        if suite is None:
            raise ValueError(f"{suite_name} is not an AES-CM/HMAC-SHA1 suite")
        if len(material) != suite.key + SALT:
            raise ValueError(f"{suite_name} needs {suite.key + SALT} octets of key||salt")
        self.rtp_keys = _session_keys(material, suite, 0, suite.rtp_tag)  # §4.3.2 labels
        self.rtcp_keys = _session_keys(material, suite, 3, suite.rtcp_tag)
        self.rtp_window = _Window()
        self.rtcp_window = _Window()
        self._rtcp_sent = 0

    # -- receiving (RFC 3711 §3.3, §3.4) --

    def unprotect(self, packet: bytes) -> bytes:
        """The clear RTP packet; raises SrtpError (``auth``, ``replay``)."""
        keys = self.rtp_keys
        end = len(packet) - keys.tag
        head = _header_len(packet[:end]) if end >= 12 else -1
        if head < 0:
            raise SrtpError("auth: shorter than header and tag")
        index = estimate_index(int.from_bytes(packet[2:4], "big"), self.rtp_window.top)
        # RFC 3711 §4.2: the tag covers the authenticated portion || ROC
        want = _tag(keys, packet[:end] + (index >> 16).to_bytes(4, "big"))
        if not std_hmac.compare_digest(want, packet[end:]):
            raise SrtpError("auth: tag mismatch")
        if self.rtp_window.seen(index):
            raise SrtpError("replay: index already seen or older than the window")
        self.rtp_window.add(index)
        ssrc = int.from_bytes(packet[8:12], "big")
        return packet[:head] + _crypt(keys, ssrc, index, packet[head:end])

    def unprotect_rtcp(self, packet: bytes) -> bytes:
        """The clear RTCP compound packet; raises SrtpError (``auth``, ``replay``)."""
        keys = self.rtcp_keys
        end = len(packet) - keys.tag
        if end < 12:
            raise SrtpError("auth: shorter than header, index and tag")
        if not std_hmac.compare_digest(_tag(keys, packet[:end]), packet[end:]):
            raise SrtpError("auth: tag mismatch")
        e_index = int.from_bytes(packet[end - 4 : end], "big")
        index = e_index & ~SRTCP_E
        if self.rtcp_window.seen(index):
            raise SrtpError("replay: SRTCP index already seen or older than the window")
        self.rtcp_window.add(index)
        body = packet[8 : end - 4]
        if e_index & SRTCP_E:  # §3.4: E = 1, the rest of the compound packet is encrypted
            body = _crypt(keys, int.from_bytes(packet[4:8], "big"), index, body)
        return packet[:8] + body

    # -- sending (for tests and re-enactment) --

    def protect(self, clear: bytes) -> bytes:
        """The SRTP packet of a clear RTP packet (the sender keeps its own ROC)."""
        keys = self.rtp_keys
        head = _header_len(clear)
        index = estimate_index(int.from_bytes(clear[2:4], "big"), self.rtp_window.top)
        self.rtp_window.add(index)
        ssrc = int.from_bytes(clear[8:12], "big")
        out = clear[:head] + _crypt(keys, ssrc, index, clear[head:])
        return out + _tag(keys, out + (index >> 16).to_bytes(4, "big"))

    def protect_rtcp(self, clear: bytes) -> bytes:
        """The SRTCP packet (E = 1) of a clear RTCP compound packet."""
        keys = self.rtcp_keys
        self._rtcp_sent = index = (self._rtcp_sent + 1) & ~SRTCP_E
        body = _crypt(keys, int.from_bytes(clear[4:8], "big"), index, clear[8:])
        out = clear[:8] + body + (SRTCP_E | index).to_bytes(4, "big")
        return out + _tag(keys, out)
