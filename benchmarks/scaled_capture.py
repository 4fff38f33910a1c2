"""A bigger load capture made of shifted copies of one, each copy its own calls and streams.

Usage: python benchmarks/scaled_capture.py BASE.pcap TIMES [-o OUT.pcap]

``editcap -t`` + ``mergecap -a`` repeat a capture in time, but every copy then carries the
same Call-IDs, branches and RTP SSRCs: an analyser sees the first copy's calls again (a
reused Call-ID, retransmission-like branches) and its streams continue, so a 40x file is
not 40x the calls. Here copy ``k`` (k >= 1) is shifted by ``k * (duration + GAP_S)`` and
rewritten in place, same lengths: the four characters after ``@`` in every Call-ID
header value (the last four without ``@``) become ``k`` in hex, the four letters or digits
before ``@`` are rotated by ``k`` (so no copy shares a Call-ID token with another, which
leg correlation would take for one call), and the RTP SSRC of every RTP packet is XORed
with ``k``. Checksums are not recomputed (loopback captures
carry none that tools check).

Reads classic pcap with Ethernet + IPv4 + UDP records (what ``gen_load.py`` writes with
tcpdump on lo); anything else is refused.
"""

from __future__ import annotations

import argparse
import re
import struct
import sys
from pathlib import Path

import numpy as np
import numpy.typing as npt

_CALL_ID = re.compile(rb"\r\n(?:Call-ID|i)[ \t]*:[ \t]*([^\r\n]+)", re.IGNORECASE)
_ETH, _IP, _UDP = 14, 20, 8
GAP_S = 40
"""Seconds between copies: more than the 32 s a transaction lingers (RFC 3261 §17), as
copies keep their Via branches."""


def _records(data: bytes) -> tuple[list[int], list[int]]:
    """Offsets of each record header and its captured length (classic pcap, any order)."""
    magic = data[:4]
    if magic not in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        raise SystemExit("scaled_capture: only little-endian classic pcap is supported")
    if struct.unpack_from("<I", data, 20)[0] != 1:
        raise SystemExit("scaled_capture: only Ethernet captures are supported")
    offs, lens = [], []
    pos = 24
    while pos + 16 <= len(data):
        incl = struct.unpack_from("<I", data, pos + 8)[0]
        offs.append(pos)
        lens.append(incl)
        pos += 16 + incl
    return offs, lens


_ALNUM = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


def _rotations(k: int) -> list[npt.NDArray[np.uint8]]:
    """Four byte tables: position i of the rotated characters shifts each letter or digit
    by digit i of ``k`` in base 62 (a bijection: distinct Call-IDs stay distinct), so the
    part of a Call-ID before ``@`` differs from every other copy's."""
    tables = []
    for i in range(4):
        shift = (k // 62**i) % 62
        lut = np.arange(256, dtype=np.uint8)
        for j, c in enumerate(_ALNUM):
            lut[c] = _ALNUM[(j + shift) % 62]
        tables.append(lut)
    return tables


def _positions(
    data: bytes, offs: list[int], lens: list[int]
) -> tuple[list[int], list[list[int]], list[int]]:
    """Byte offsets to rewrite: 4 per Call-ID value for the copy tag, the (up to) 4
    characters before its ``@`` by position, 4 per RTP SSRC."""
    cid: list[int] = []
    before: list[list[int]] = [[], [], [], []]
    ssrc: list[int] = []
    for off, n in zip(offs, lens, strict=True):
        ip = off + 16 + _ETH
        if data[ip - 2 : ip] != b"\x08\x00" or data[ip] != 0x45 or data[ip + 9] != 17:
            continue  # not IPv4/UDP without options: left as it is
        pl = ip + _IP + _UDP
        end = off + 16 + n
        if end - pl >= 12 and data[pl] & 0xC0 == 0x80 and not 200 <= data[pl + 1] <= 204:
            ssrc.extend(range(pl + 8, pl + 12))  # RTP (RFC 3550 §5.1), not RTCP (200-204)
            continue
        for m in _CALL_ID.finditer(data, pl, end):
            value_start, value_end = m.span(1)
            at = data.find(b"@", value_start, value_end)
            k = at + 1 if 0 <= at <= value_end - 5 else value_end - 4
            if k >= value_start:
                cid.extend(range(k, k + 4))
            if at > value_start:
                for i in range(min(4, at - value_start)):
                    before[i].append(at - 1 - i)
    return cid, before, ssrc


def scale(base: Path, times: int, out: Path) -> None:
    data = base.read_bytes()
    offs, lens = _records(data)
    ts = np.array(offs, np.int64)
    first = struct.unpack_from("<I", data, offs[0])[0]
    last = struct.unpack_from("<I", data, offs[-1])[0]
    step = last - first + 1 + GAP_S  # whole seconds: the capture's span, rounded up, + GAP_S
    cid_list, before_lists, ssrc_list = _positions(data, offs, lens)
    cid, ssrc = np.array(cid_list, np.int64), np.array(ssrc_list, np.int64)
    before = [np.array(b, np.int64) - 24 for b in before_lists]
    src = np.frombuffer(data, np.uint8)
    ts_bytes = ts[:, None] + np.arange(4)
    secs = src[ts_bytes].astype(np.uint32) @ (np.uint32(1) << np.arange(0, 32, 8, dtype=np.uint32))
    with out.open("wb") as f:
        f.write(data)
        for k in range(1, times):
            buf = src[24:].copy()
            shifted = (secs + np.uint32(k * step)).astype("<u4")
            buf[(ts_bytes - 24).ravel()] = shifted.view(np.uint8)
            tag = np.frombuffer(f"{k:04x}".encode(), np.uint8)
            buf[cid - 24] = np.tile(tag, len(cid) // 4)
            for pos, lut in zip(before, _rotations(k), strict=True):
                buf[pos] = lut[buf[pos]]
            xor = np.frombuffer(struct.pack(">I", k), np.uint8)
            buf[ssrc - 24] ^= np.tile(xor, len(ssrc) // 4)
            f.write(buf.tobytes())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("base", type=Path)
    ap.add_argument("times", type=int)
    ap.add_argument("-o", "--output", type=Path)
    args = ap.parse_args(argv)
    out = args.output or args.base.with_name(f"{args.base.stem}_s{args.times}{args.base.suffix}")
    scale(args.base, args.times, out)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
