"""SRTP and SRTCP decryption of the streams whose SDES keys the SDP showed (RFC 3711, 4568).

How this works: RTP statistics come from the clear RTP header, so SRTP streams are
measured like any other on the first read. Decryption is a second, narrow step that runs
after the streams are mapped to the SDP that announced them (:func:`sipflow.rtp.mapping.
place_streams`) and only for streams on an SDES m-line (RFC 4568) whose sender's key the
SDP carried (clear SIP, SIP over TLS decrypted with a key log, PBX logs):

* which key: each side's ``a=crypto`` holds the key that side protects what it *sends*
  with (RFC 4568 §5.1); the answer echoes the tag of the offered line it accepted
  (§5.1.2). A stream sent by the offerer is tried with the offered line of that tag, one
  sent by the answerer with the answer's line; then with the sender's keys from the other
  answered exchanges of the same leg (a re-INVITE or UPDATE may re-key) and its other
  offered lines - at most :data:`MAX_KEYS`, one libsrtp session each, the last key that
  worked tried first;
* the capture is read a second time with :class:`SrtpSink` as media sink: it picks the
  packets of those streams by 5-tuple and SSRC (ports filtered column-wise first) and
  unprotects each with pylibsrtp (libsrtp), or for the AES-CM suites libsrtp's binding
  lacks (AES_192/256_CM_HMAC_SHA1_80/32, RFC 6188) with :mod:`sipflow.rtp.srtp_cm`:
  authenticated and decrypted, or counted as an
  authentication failure (RFC 3711 §3.3: the packet is discarded) or a replay (the same
  packet index twice, §3.3.2). Nothing but counters is kept per stream;
* SRTCP (RFC 3711 §3.4) from a stream's sender - matched by the sender SSRC in its clear
  first 8 bytes and the address pair - is unprotected with the same key and folded into
  a fresh :class:`~sipflow.rtp.rtcp.RtcpFolder`, so SR/RR figures appear for SRTP calls;
  the first read's RTCP figures of an SRTP stream are dropped (they were read from
  encrypted bytes).

Keys stay in memory (:class:`~sipflow.sdp.srtp.MasterKey`): no output names more than
the suite and the tag. pylibsrtp is optional: without it (for its suites), or for suites
neither it nor :mod:`~sipflow.rtp.srtp_cm` implements, streams keep their header
statistics and a ``srtp.not_decrypted`` finding says why. :class:`StreamDecryptor` is
also what the audio export uses to decrypt.
"""

from __future__ import annotations

import contextlib
import functools
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from sipflow.errors import InputError, ParseError
from sipflow.findings import Finding, Ref, Severity
from sipflow.rtp import rtcp as rtcp_mod
from sipflow.rtp.announced import AnnouncedMedia
from sipflow.rtp.columns import MediaBatch, MediaKind, media_kind
from sipflow.rtp.srtp_cm import CmSession, SrtpError, cm_suite
from sipflow.sdp.srtp import MasterKey, SrtpMethod

if TYPE_CHECKING:
    from sipflow.rtp.mapping import Announced, Placed
    from sipflow.rtp.streams import RtpStream
    from sipflow.sdp.media import CallMedia

__all__ = ["Srtp", "SrtpSink", "StreamDecryptor", "pylibsrtp_module", "rtp_payload"]

MAX_KEYS = 8
"""Candidate keys tried per stream, at most."""
REPLAY_WINDOW = 1024
"""libsrtp replay window (RFC 3711 §3.3.2: at least 64): how late a packet may arrive."""
FAILED_REFS = 3
"""Frames of failed packets kept per stream for the finding."""
INSTALL_HINT = "pip install pylibsrtp (it is in sipflow's dev and b2bua extras)"

# Suites pylibsrtp 1.0 implements (libsrtp profiles), by SDES name (RFC 4568 §6.2,
# RFC 7714 §12).
PROFILES = {
    "AES_CM_128_HMAC_SHA1_80": "SRTP_PROFILE_AES128_CM_SHA1_80",
    "AES_CM_128_HMAC_SHA1_32": "SRTP_PROFILE_AES128_CM_SHA1_32",
    "AEAD_AES_128_GCM": "SRTP_PROFILE_AEAD_AES_128_GCM",
    "AEAD_AES_256_GCM": "SRTP_PROFILE_AEAD_AES_256_GCM",
}
CM_SUITES = "AES_192/256_CM_HMAC_SHA1_80/32 (and AES_CM_192/256_...)"
"""What :mod:`sipflow.rtp.srtp_cm` adds to PROFILES (RFC 6188)."""


def tag_length(suite: str, rtcp: bool) -> int:
    """Octets of authentication tag after the MKI (RFC 3711 §3.1, §3.4; RFC 4568
    §6.2.1-6.2.2 and RFC 6188 §6: the _32 suites keep an 80-bit SRTCP tag). AEAD suites
    carry their tag inside the ciphertext (RFC 7714 §8.2), so the MKI is last: 0."""
    cm = cm_suite(suite)
    if cm is not None:
        return cm.rtcp_tag if rtcp else cm.rtp_tag
    return 0


def usable(suite: str, lib: ModuleType | None) -> bool:
    """Whether a stream keyed with ``suite`` can be unprotected here."""
    return (suite in PROFILES and lib is not None) or (
        suite not in PROFILES and cm_suite(suite) is not None
    )


def pylibsrtp_module() -> ModuleType | None:
    """pylibsrtp, or None when it is not installed (an optional dependency)."""
    try:
        import pylibsrtp
    except ImportError:
        return None
    return pylibsrtp


def strip_mki(packet: bytes, suite: str, mki_len: int, rtcp: bool) -> bytes:
    """The packet without its MKI (RFC 3711 §3.1): the MKI sits before the authentication
    tag and is not authenticated, so libsrtp (given no MKI) checks the rest unchanged."""
    if not mki_len:
        return packet
    tag = tag_length(suite, rtcp)
    end = len(packet) - tag
    return packet[: end - mki_len] + packet[end:]


def rtp_payload(plain: bytes) -> tuple[int, int, bytes] | None:
    """(payload type, RTP timestamp, payload) of one clear RTP packet (RFC 3550 §5.1:
    CSRCs, header extension and padding skipped); None when the lengths do not add up."""
    if len(plain) < 12:
        return None
    start = 12 + 4 * (plain[0] & 0x0F)
    if plain[0] & 0x10 and len(plain) >= start + 4:  # RFC 3550 §5.3.1
        start += 4 + 4 * int.from_bytes(plain[start + 2 : start + 4], "big")
    end = len(plain) - (plain[-1] if plain[0] & 0x20 else 0)
    if start > end:
        return None
    return plain[1] & 0x7F, int.from_bytes(plain[4:8], "big"), plain[start:end]


# -- one stream -------------------------------------------------------------------------------


@dataclass
class Counts:
    """What unprotecting one stream's SRTP (or SRTCP) packets gave."""

    packets: int = 0
    authenticated: int = 0
    auth_failed: int = 0
    replayed: int = 0
    failed_frames: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, int]:
        return {
            "packets": self.packets,
            "authenticated": self.authenticated,
            "auth_failed": self.auth_failed,
            "replayed": self.replayed,
        }


class StreamDecryptor:
    """Unprotects the SRTP and SRTCP packets of one stream with its sender's keys."""

    def __init__(
        self, keys: tuple[MasterKey, ...], lib: ModuleType | None, selected: int = 0
    ) -> None:
        self.keys = keys[:MAX_KEYS]
        self.selected = selected or len(self.keys)
        """The first ``selected`` keys are those the offer/answer selected (the rest are
        the sender's other offered lines)."""
        self._lib = lib
        self._errors: tuple[type[Exception], ...] = (SrtpError,) + ((lib.Error,) if lib else ())
        self._sessions: list[Any] = [None] * len(self.keys)
        self._cur = 0
        self._fast: Any = None
        """The session of the key that worked last, while its packets carry no MKI."""
        self.rtp = Counts()
        self.rtcp = Counts()
        self.used: Counter[int] = Counter()
        """Packets authenticated per key (index into ``keys``)."""

    def _session(self, k: int) -> Any:
        """The libsrtp session of key ``k`` (built once; False when the key is unusable);
        a :class:`~sipflow.rtp.srtp_cm.CmSession` for the AES-CM suites libsrtp lacks."""
        s = self._sessions[k]
        if s is None:
            key = self.keys[k]
            lib = self._lib
            if key.suite not in PROFILES or lib is None:
                s = self._cm_session(key)
                self._sessions[k] = s
                return s
            try:
                policy = lib.Policy(
                    key=key.material(),
                    ssrc_type=lib.Policy.SSRC_ANY_INBOUND,
                    srtp_profile=getattr(lib.Policy, PROFILES[key.suite]),
                )
                policy.window_size = REPLAY_WINDOW
                s = lib.Session(policy=policy)
            except (KeyError, ValueError, lib.Error):
                s = False  # a suite libsrtp lacks, or a key of the wrong length
            self._sessions[k] = s
        return s

    @staticmethod
    def _cm_session(key: MasterKey) -> CmSession | bool:
        if key.suite in PROFILES:
            return False  # pylibsrtp's suites stay with pylibsrtp (not installed here)
        try:
            return CmSession(key.material(), key.suite)
        except ValueError:
            return False  # not AES-CM, or a key of the wrong length

    def unprotect(self, packet: bytes, frame: int, rtcp: bool = False) -> bytes | None:
        """The clear packet, or None (authentication failed with every key, or a replay)."""
        counts = self.rtcp if rtcp else self.rtp
        counts.packets += 1
        if not rtcp and self._fast is not None:  # the key that worked last, no MKI
            try:
                clear: bytes = self._fast.unprotect(packet)
            except self._errors:
                pass  # another key, a replay or a failure: the general path says which
            else:
                counts.authenticated += 1
                self.used[self._cur] += 1
                return clear
        n = len(self.keys)
        for step in range(n):
            k = (self._cur + step) % n
            out = self._try(k, packet, rtcp)
            if out is None:
                continue
            if out is _REPLAY:
                counts.replayed += 1
                return None
            assert isinstance(out, bytes)
            self._cur = k
            self._fast = self._sessions[k] if not self.keys[k].mki_length else None
            counts.authenticated += 1
            if not rtcp:
                self.used[k] += 1
            return out
        counts.auth_failed += 1
        if len(counts.failed_frames) < FAILED_REFS:
            counts.failed_frames.append(frame)
        return None

    def _try(self, k: int, packet: bytes, rtcp: bool) -> bytes | object | None:
        session = self._session(k)
        if session is False:
            return None
        key = self.keys[k]
        data = strip_mki(packet, key.suite, key.mki_length, rtcp)
        try:
            out: bytes = session.unprotect_rtcp(data) if rtcp else session.unprotect(data)
        except self._errors as exc:
            return _REPLAY if "replay" in str(exc) else None
        return out

    def best_key(self) -> MasterKey | None:
        """The key that authenticated most RTP packets (else the first candidate)."""
        if self.used:
            return self.keys[self.used.most_common(1)[0][0]]
        return self.keys[0] if self.keys else None

    def ordered_keys(self) -> tuple[MasterKey, ...]:
        """The keys, those that authenticated first (by packets)."""
        return tuple(sorted(self.keys, key=lambda k: -self.used[self.keys.index(k)]))


_REPLAY = object()


# -- the second read ----------------------------------------------------------------------------


def _ip_words(ip: str) -> tuple[int, int]:
    """An address as the two int64 words MediaBatch address rows give (16 bytes, IPv4
    first then zeros)."""
    import ipaddress

    raw = ipaddress.ip_address(ip).packed.ljust(16, b"\0")
    words = np.frombuffer(raw, ">u8").astype(np.int64)
    return int(words[0]), int(words[1])


@dataclass
class Job:
    """One stream to decrypt: its identity, its decryptor, what SRTCP said."""

    index: int
    """Position in the placed list."""
    stream: RtpStream
    dec: StreamDecryptor


class SrtpSink:
    """Media sink for the second read: unprotects the packets of the jobs' streams."""

    def __init__(self, jobs: list[Job]) -> None:
        self.rtp: dict[tuple[int, ...], Job] = {}
        self.rtcp: dict[tuple[int, ...], Job] = {}
        for job in jobs:
            st = job.stream
            src, dst = _ip_words(st.src.ip), _ip_words(st.dst.ip)
            self.rtp[(*src, st.src.port, *dst, st.dst.port, st.ssrc)] = job
            self.rtcp[(*src, *dst, st.ssrc)] = job
        self.sports = np.array(sorted({j.stream.src.port for j in jobs}), np.int64)
        self.folder = rtcp_mod.RtcpFolder()
        self.announced = AnnouncedMedia()

    def announce(self, payload: bytes) -> None:
        """SDP seen on the way: classified as on the first read (sipflow.rtp.announced)."""
        self.announced.add_sip(payload)

    def feed(self, batch: MediaBatch) -> None:
        kinds = media_kind(batch.head, batch.length)
        self.announced.rescue(batch, kinds)
        rows = np.flatnonzero((kinds == MediaKind.RTP) & np.isin(batch.sport, self.sports))
        if len(rows):
            self._rtp(batch, rows)
        for j in np.flatnonzero(kinds == MediaKind.RTCP).tolist():
            self._rtcp(batch, j)

    def _rtp(self, b: MediaBatch, rows: npt.NDArray[np.intp]) -> None:
        h = b.head[rows].astype(np.int64)
        ssrc = (h[:, 8] << 24) | (h[:, 9] << 16) | (h[:, 10] << 8) | h[:, 11]
        src = b.src[rows].view(">u8").astype(np.int64)
        dst = b.dst[rows].view(">u8").astype(np.int64)
        cols = (src[:, 0], src[:, 1], b.sport[rows], dst[:, 0], dst[:, 1], b.dport[rows], ssrc)
        keys = zip(*(c.tolist() for c in cols), strict=True)
        where = zip(
            b.offset[rows].tolist(), b.length[rows].tolist(), b.frame[rows].tolist(), strict=True
        )
        raw, jobs = b.buf.data, self.rtp
        for key, (off, size, frame) in zip(keys, where, strict=True):
            job = jobs.get(key)
            if job is not None:
                job.dec.unprotect(bytes(raw[off : off + size]), frame)

    def _rtcp(self, b: MediaBatch, j: int) -> None:
        h = b.head[j].astype(np.int64)
        ssrc = int((h[4] << 24) | (h[5] << 16) | (h[6] << 8) | h[7])
        src = b.src[j].view(">u8").astype(np.int64).tolist()
        dst = b.dst[j].view(">u8").astype(np.int64).tolist()
        job = self.rtcp.get((*src, *dst, ssrc))
        if job is None:
            return
        off = int(b.offset[j])
        packet = b.buf[off : off + int(b.length[j])].tobytes()
        clear = job.dec.unprotect(packet, int(b.frame[j]), rtcp=True)
        if clear is None:
            return
        with contextlib.suppress(ParseError):  # authenticated but not RTCP: not folded
            packets = rtcp_mod.parse_compound(clear)
            self.folder.fold(packets, job.stream.src.ip, job.stream.dst.ip, int(b.ts[j]))


ReadMedia = Callable[[str, int, Any], None]
"""Reads capture ``path`` (source index) again into a media sink: the I/O the engine
passes in (:func:`sipflow.engine.local.reread_media`), so this stage stays sans-IO."""


# -- the stage --------------------------------------------------------------------------------


def _other(party: str) -> str:
    return "callee" if party == "caller" else "caller"


def sender_keys(a: Announced, cm: CallMedia) -> tuple[tuple[MasterKey, ...], int]:
    """Candidate keys for a stream mapped to ``a``, and how many of them were selected:
    the sender's selected key in the mapped exchange, then in the other answered
    exchanges of the same leg and m-line (re-keying), then its other offered lines; each
    key once, at most MAX_KEYS."""
    side = "answerer" if a.receiver == "offerer" else "offerer"
    party = a.exchange.offerer if side == "offerer" else _other(a.exchange.offerer)
    ours = [(a.exchange, a.line)]
    for x in cm.exchanges:
        if x is a.exchange or x.leg != a.exchange.leg or x.status != "answered":
            continue
        ours += [(x, ln) for ln in x.lines if ln.index == a.line.index]
    first: list[MasterKey] = []
    rest: list[MasterKey] = []
    for x, ln in ours:
        if ln.sdes is None:
            continue
        role = "offerer" if x.offerer == party else "answerer"
        chosen = ln.sdes.selected(role)
        first += chosen
        rest += [k for k in ln.sdes.sender_keys(role) if k not in chosen]
    first, rest = _unique(first, set()), _unique(rest, {(k.suite, k.material()) for k in first})
    return tuple((first + rest)[:MAX_KEYS]), len(first)


def _unique(keys: list[MasterKey], seen: set[tuple[str, bytes]]) -> list[MasterKey]:
    out: list[MasterKey] = []
    for k in keys:
        if (k.suite, k.material()) not in seen:
            seen.add((k.suite, k.material()))
            out.append(k)
    return out


class Srtp:
    """The SRTP stage of :func:`sipflow.rtp.mapping.map_streams`: ``paths`` are the
    sources in order, read a second time by ``read`` for the streams that have keys."""

    def __init__(self, paths: list[str], read: ReadMedia) -> None:
        self.paths = paths
        self.read = read

    @functools.cached_property
    def lib(self) -> ModuleType | None:
        """pylibsrtp, imported when a stream has keys to try (not for plain RTP)."""
        return pylibsrtp_module()

    def __call__(
        self, placed: list[Placed], media: list[CallMedia]
    ) -> tuple[list[Placed], list[Finding]]:
        out = list(placed)
        skipped: dict[str, list[RtpStream]] = {}
        jobs: dict[int, list[Job]] = {}
        for i, (st, a, note) in enumerate(placed):
            if a is None or a.line.srtp is SrtpMethod.NONE:
                continue
            why, keys, selected = self._why_not(st, a, media[a.call])
            if why is not None:
                reason = why
                if a.line.srtp is SrtpMethod.SDES:
                    skipped.setdefault(reason, []).append(st)
                out[i] = (_undecrypted(st, a, reason), a, note)
                continue
            dec = StreamDecryptor(keys, self.lib, selected)
            jobs.setdefault(st.source, []).append(Job(i, st, dec))
        findings = [_skipped_finding(reason, sts) for reason, sts in skipped.items()]
        for source, todo in sorted(jobs.items()):
            self._run(source, todo, out, findings)
        return out, findings

    def _why_not(
        self, st: RtpStream, a: Announced, cm: CallMedia
    ) -> tuple[str | None, tuple[MasterKey, ...], int]:
        """Why the stream cannot be decrypted (None: it can), its candidate keys and how
        many of them the offer/answer selected."""
        if a.line.srtp is SrtpMethod.DTLS:
            return "DTLS-SRTP: the keys come from the DTLS handshake, not the SDP", (), 0
        keys, selected = sender_keys(a, cm)
        if not keys:
            return "the SDP carries no key for the sender", (), 0
        if not any(usable(k.suite, self.lib) for k in keys):
            if self.lib is None and any(k.suite in PROFILES for k in keys):
                return f"pylibsrtp is not installed ({INSTALL_HINT})", (), 0
            names = ", ".join(sorted({k.suite for k in keys}))
            known = ", ".join([*PROFILES, CM_SUITES])
            return f"suite {names}: sipflow decrypts {known} only", (), 0
        path = self.paths[st.source] if st.source < len(self.paths) else "-"
        if path == "-":
            return "the source was read from stdin and cannot be read again", (), 0
        return None, keys, selected

    def _run(self, source: int, todo: list[Job], out: list[Placed], found: list[Finding]) -> None:
        sink = SrtpSink(todo)
        try:
            self.read(self.paths[source], source, sink)
        except (InputError, OSError) as exc:
            reason = f"the source cannot be read again: {exc}"
            for job in todo:
                st, a, note = out[job.index]
                assert a is not None
                out[job.index] = (_undecrypted(st, a, reason), a, note)
            found.append(_skipped_finding(reason, [j.stream for j in todo]))
            return
        for job in todo:
            st, a, note = out[job.index]
            assert a is not None
            st = _decrypted(st, a, job, sink.folder)
            out[job.index] = (st, a, note)
            found.extend(_auth_findings(st, a, job.dec))


def _undecrypted(st: RtpStream, a: Announced, reason: str) -> RtpStream:
    """An SRTP stream left encrypted: header statistics only; its RTCP figures were read
    from encrypted bytes and are dropped."""
    crypto = a.line.crypto
    srtp = {
        "method": a.line.srtp.value,
        "suite": crypto.suite if crypto else None,
        "tag": crypto.tag if crypto else None,
        "packets": st.packets,
        "authenticated": None,
        "auth_failed": None,
        "decrypted": None,
        "replayed": None,
        "keys_used": 0,
        "srtcp": None,
        "not_decrypted": reason,
    }
    return st.evolve(srtp=srtp, rtcp=None)


def _decrypted(st: RtpStream, a: Announced, job: Job, folder: rtcp_mod.RtcpFolder) -> RtpStream:
    dec = job.dec
    key = dec.best_key()
    view = folder.view(st.ssrc, st.src.ip, st.dst.ip)
    srtp = {
        "method": a.line.srtp.value,
        "suite": key.suite if key else None,
        "tag": key.tag if key else None,
        "packets": dec.rtp.packets,
        "authenticated": dec.rtp.authenticated,
        "auth_failed": dec.rtp.auth_failed,
        "decrypted": dec.rtp.authenticated,  # every supported suite encrypts what it authenticates
        "replayed": dec.rtp.replayed,
        "keys_used": len(dec.used),
        "srtcp": dec.rtcp.to_dict() if dec.rtcp.packets else None,
        "not_decrypted": None,
    }
    rtcp = view.to_dict(st.clock) if view is not None else None
    return st.evolve(srtp=srtp, rtcp=rtcp, srtp_keys=dec.ordered_keys())


def _auth_findings(st: RtpStream, a: Announced, dec: StreamDecryptor) -> list[Finding]:
    out = []
    key = dec.best_key()
    label = f"crypto tag {key.tag} {key.suite}" if key else "no key"
    sender = "answerer" if a.receiver == "offerer" else "offerer"
    if key is not None and dec.used and dec.keys.index(key) >= dec.selected:
        chosen = sorted({k.tag for k in dec.keys[: dec.selected]})
        text = (
            f"SRTP {st.src} -> {st.dst} (SSRC 0x{st.ssrc:08X}): the {sender} protects its media "
            f"with its offered {label}, although the answer on leg {a.exchange.leg} "
            f"accepted tag {', '.join(map(str, chosen))} (RFC 4568 §5.1.3)"
        )
        first = (Ref(st.source, st.first_frame),)
        out.append(Finding("srtp.unselected_key", Severity.WARNING, text, "RFC 4568 §5.1.3", first))
    checks = (
        ("SRTP", "srtp.auth_failed", dec.rtp, "RFC 3711 §3.3"),
        ("SRTCP", "srtp.srtcp_auth_failed", dec.rtcp, "RFC 3711 §3.4"),
    )
    for what, code, counts, rfc in checks:
        if not counts.auth_failed:
            continue
        how = "every" if not counts.authenticated else f"{counts.auth_failed} of {counts.packets}"
        text = (
            f"{what} {st.src} -> {st.dst} (SSRC 0x{st.ssrc:08X}): {how} packet(s) failed "
            f"authentication with the {sender}'s key from the SDP of leg {a.exchange.leg} "
            f"({label}, {len(dec.keys)} key(s) tried): the sender protects its media with "
            "another key or tag than it announced (RFC 4568 §5.1), or the packets were altered"
        )
        refs = tuple(Ref(st.source, f) for f in counts.failed_frames)
        out.append(Finding(code, Severity.WARNING, text, rfc, refs))
    return out


def _skipped_finding(reason: str, streams: list[RtpStream]) -> Finding:
    text = f"{len(streams)} SRTP stream(s) with SDES keys in the SDP not decrypted: {reason}"
    refs = tuple(Ref(s.source, s.first_frame) for s in streams[:FAILED_REFS])
    return Finding("srtp.not_decrypted", Severity.INFO, text, "RFC 4568 §6.1", refs)
