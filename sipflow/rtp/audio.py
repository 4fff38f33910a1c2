"""G.711 A-law / mu-law audio of RTP streams to WAV, decoded column-wise.

How this works: :func:`g711_table` builds the 256-entry decode table of ITU-T G.711
(mu-law: §2 Table 2a, A-law: Table 1a, 16-bit linear output, as sox and most decoders
scale it). :class:`AudioSink` is a media sink for :func:`sipflow.ingest.capture.read_capture`
that keeps the payload bytes of the chosen streams only (the audio being exported, never
the rest of the capture), decrypting SRTP streams with the keys the SRTP stage found
(:mod:`sipflow.rtp.decrypt`). :func:`assemble` places every packet's samples at its RTP
timestamp offset from the stream's first packet, so a lost packet is silence of its length
and a duplicate overwrites itself; one table lookup decodes the whole stream. Sans-IO:
the capture is read by :func:`sipflow.api.decode_audio` (the sink fed by a second read) and
the WAV files written by :mod:`sipflow.report.wav`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from sipflow.rtp.columns import MediaBatch, media_kind, rtp_headers, ts_diff
from sipflow.rtp.decrypt import StreamDecryptor, pylibsrtp_module, rtp_payload, usable
from sipflow.rtp.streams import RtpStream

__all__ = ["RATE", "AudioSink", "assemble", "g711_table"]

PCMU, PCMA = 0, 8
RATE = 8000
MAX_SAMPLES = RATE * 3600 * 4  # a stream longer than 4 h of timestamps is cut there


def g711_table(pt: int) -> npt.NDArray[np.int16]:
    """Linear 16-bit value of each of the 256 code words (pt 0: mu-law, 8: A-law)."""
    code = np.arange(256, dtype=np.int64)
    if pt == PCMU:
        u = ~code & 0xFF
        exp, mant = (u >> 4) & 7, u & 0x0F
        mag = (((mant << 3) + 0x84) << exp) - 0x84
        out = np.where(u & 0x80, -mag, mag)
    else:
        a = code ^ 0x55
        exp, mant = (a >> 4) & 7, a & 0x0F
        mag = np.where(exp == 0, (mant << 4) + 8, ((mant << 4) + 0x108) << np.maximum(exp - 1, 0))
        out = np.where(a & 0x80, mag, -mag)
    return out.astype(np.int16)


@dataclass
class _Packets:
    rts: list[npt.NDArray[np.int64]] = field(default_factory=list)
    pt: list[npt.NDArray[np.int64]] = field(default_factory=list)
    data: list[bytes] = field(default_factory=list)
    sizes: list[npt.NDArray[np.int64]] = field(default_factory=list)


class AudioSink:
    """Media sink that keeps the G.711 payloads of the streams ``keys``:
    (src ip, src port, dst ip, dst port, ssrc) as :class:`RtpStream` shows them. An SRTP
    stream is decrypted with the keys the SRTP stage found (``RtpStream.srtp_keys``);
    one that could not be decrypted is left out (its payload is ciphertext)."""

    def __init__(self, streams: list[RtpStream]) -> None:
        lib = pylibsrtp_module() if any(s.srtp_keys for s in streams) else None
        self.decrypt = {  # AES-192/256-CM need no pylibsrtp (sipflow.rtp.srtp_cm)
            s.id: StreamDecryptor(s.srtp_keys, lib)
            for s in streams
            if s.srtp_keys and any(usable(k.suite, lib) for k in s.srtp_keys)
        }
        streams = [s for s in streams if s.srtp is None or s.id in self.decrypt]
        self.want = {(s.src.ip, s.src.port, s.dst.ip, s.dst.port, s.ssrc): s.id for s in streams}
        self.ports = np.array(sorted({s.src.port for s in streams}), np.int64)
        self.got: dict[int, _Packets] = {}

    def announce(self, payload: bytes) -> None:
        """SDP on the way: G.711 (PT 0, 8) is always found by content, nothing to learn."""

    def feed(self, batch: MediaBatch) -> None:
        rows = np.flatnonzero(np.isin(batch.sport, self.ports))
        if len(rows) == 0:
            return
        b = batch.take(rows)
        rows = np.flatnonzero(media_kind(b.head, b.length) == 1)
        b = b.take(rows)
        h = rtp_headers(b.buf, b.offset, b.length, b.head)
        from sipflow.ingest.decode import addr_text

        for i in np.flatnonzero((h.pt == PCMU) | (h.pt == PCMA)).tolist():
            v = 4 if int(b.version[i]) == 4 else 16
            key = (addr_text(b.src[i, :v].tobytes()), int(b.sport[i]),
                   addr_text(b.dst[i, :v].tobytes()), int(b.dport[i]), int(h.ssrc[i]))  # fmt: skip
            sid = self.want.get(key)
            if sid is None:
                continue
            dec = self.decrypt.get(sid)
            if dec is not None:
                self._srtp(sid, dec, b, i)
            elif h.valid[i]:
                off, n = int(h.data_offset[i]), int(h.data_len[i])
                self._keep(sid, int(h.pt[i]), int(h.ts[i]), b.buf[off : off + n].tobytes())

    def _srtp(self, sid: int, dec: StreamDecryptor, b: MediaBatch, i: int) -> None:
        off = int(b.offset[i])
        clear = dec.unprotect(b.buf[off : off + int(b.length[i])].tobytes(), int(b.frame[i]))
        found = rtp_payload(clear) if clear is not None else None
        if found is not None:
            self._keep(sid, *found)

    def samples(self) -> dict[int, npt.NDArray[np.int16]]:
        """Decoded samples per stream id, of everything fed so far (:func:`assemble`)."""
        return {
            sid: assemble(
                np.concatenate(p.rts), np.concatenate(p.pt), np.concatenate(p.sizes),
                b"".join(p.data),
            )
            for sid, p in self.got.items()
        }  # fmt: skip

    def _keep(self, sid: int, pt: int, rts: int, data: bytes) -> None:
        p = self.got.setdefault(sid, _Packets())
        p.rts.append(np.array([rts], np.int64))
        p.pt.append(np.array([pt], np.int64))
        p.sizes.append(np.array([len(data)], np.int64))
        p.data.append(data)


def assemble(
    rts: npt.NDArray[np.int64], pt: npt.NDArray[np.int64], sizes: npt.NDArray[np.int64], data: bytes
) -> npt.NDArray[np.int16]:
    """Decoded samples of one stream: packet k's bytes (``sizes[k]`` of them, in ``data``)
    go to sample ``ts_diff(rts[k], rts[0])``; what no packet covers stays silence (0)."""
    if len(rts) == 0:
        return np.zeros(0, np.int16)
    pos: npt.NDArray[np.int64] = ts_diff(rts, np.full_like(rts, rts[0]))
    pos -= pos.min()
    total = int(min((pos + sizes).max(), MAX_SAMPLES))
    codes = np.frombuffer(data, np.uint8)
    starts = np.repeat(pos, sizes)
    within = np.arange(len(codes)) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    where = starts + within
    keep = where < total
    law = np.repeat(pt, sizes)[keep]
    out = np.zeros(total, np.int16)
    tables = {PCMU: g711_table(PCMU), PCMA: g711_table(PCMA)}
    for code_pt, table in tables.items():
        sel = law == code_pt
        out[where[keep][sel]] = table[codes[keep][sel]]
    return out
