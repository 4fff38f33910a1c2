"""Live capture sockets and a HEP collector: what ``sipflow live`` reads from (and writes).

How this works: :class:`RawCapture` reads frames from an ``AF_PACKET`` socket bound to one
interface (or all, ``any``), with the BPF filter compiled by libpcap (through scapy) and
attached in the kernel, and kernel timestamps (``SO_TIMESTAMPNS``). :class:`HepCollector`
receives HEP v1/v2/v3 on UDP and HEP3 on TCP (framed by :class:`~sipflow.ingest.hep.HepStream`).
:class:`PcapWriter` writes what arrives to a pcap (ns timestamps), rotating by size. Nothing
here parses SIP: :mod:`sipflow.engine.live` runs the loop over these sockets and feeds what
they read to the same pipeline as ``sipflow analyze``.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import socket
import struct
import time
from pathlib import Path

from sipflow.errors import SipflowError
from sipflow.ingest.hep import HepStream
from sipflow.ingest.types import Endpoint

__all__ = [
    "HepCollector",
    "LiveError",
    "PcapWriter",
    "RawCapture",
    "hep_frame",
    "parse_listen",
    "parse_size",
]

NS = 1_000_000_000
SNAPLEN = 262_144
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101

# Linux <linux/if_packet.h>, <asm-generic/socket.h>, <linux/if_arp.h>
ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
SO_ATTACH_FILTER = 26
SO_TIMESTAMPNS = 35
SOL_PACKET = 263
PACKET_STATISTICS = 6
ARPHRD_ETHER = 1
ARPHRD_LOOPBACK = 772
DLT_EN10MB = 1
DLT_RAW = 12
_ETH_V4 = b"\0" * 12 + b"\x08\x00"
_ETH_V6 = b"\0" * 12 + b"\x86\xdd"


class LiveError(SipflowError):
    """Live capture cannot start: permissions, interface, filter or address problems."""


# ----------------------------------------------------------------------------- options

_UNITS = {"": 1, "K": 1000, "M": 1000**2, "G": 1000**3, "KB": 1000, "MB": 1000**2, "GB": 1000**3}


def parse_size(text: str) -> int:
    """``10M``, ``500k``, ``1G`` or plain bytes -> bytes (decimal units, as tcpdump -C)."""
    t = text.strip().upper()
    digits = t.rstrip("KMGB")
    if not digits.isdigit() or t[len(digits) :] not in _UNITS or int(digits) == 0:
        raise LiveError(f"bad size {text!r}: use bytes or a number with K, M or G")
    return int(digits) * _UNITS[t[len(digits) :]]


def parse_listen(text: str) -> tuple[str, int]:
    """``[ADDR]:PORT`` -> (address, port); ``:9060`` and ``9060`` listen on 0.0.0.0."""
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = "", text
    host = host.strip("[]") or "0.0.0.0"
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise LiveError(f"bad listen address {text!r}: use [ADDR]:PORT, e.g. 127.0.0.1:9060")
    return host, int(port)


# ----------------------------------------------------------------------------- capture


def _compile_bpf(expr: str, dlt: int) -> bytes:
    """libpcap's compiler (through scapy) -> ``struct sock_filter`` instructions."""
    try:
        from scapy.arch.common import compile_filter
        from scapy.error import Scapy_Exception
    except ImportError as exc:  # pragma: no cover - scapy is a dependency
        raise LiveError(f"capture filters need scapy/libpcap: {exc}") from None
    try:
        prog = compile_filter(expr, linktype=dlt)
    except Scapy_Exception as exc:
        raise LiveError(f"bad capture filter {expr!r}: {_pcap_reason(str(exc))}") from None
    n = int(prog.bf_len)
    return ctypes.string_at(ctypes.addressof(prog.bf_insns.contents), 8 * n)


def _pcap_reason(text: str) -> str:
    return text[text.rfind("(") + 1 : -1] if text.endswith(")") else text


class RawCapture:
    """An AF_PACKET socket on one interface (``any``: all of them), BPF attached."""

    def __init__(self, iface: str, bpf: str = "") -> None:
        self.iface = iface
        index = 0 if iface == "any" else _if_index(iface)
        hatype = _if_type(iface)
        cooked = iface == "any" or hatype not in (ARPHRD_ETHER, ARPHRD_LOOPBACK)
        self.link_type = LINKTYPE_RAW if cooked else LINKTYPE_ETHERNET
        kind = socket.SOCK_DGRAM if cooked else socket.SOCK_RAW
        code = _compile_bpf(bpf, DLT_RAW if cooked else DLT_EN10MB) if bpf else b""
        try:
            self.sock = socket.socket(socket.AF_PACKET, kind, socket.htons(ETH_P_ALL))
        except PermissionError:
            raise LiveError(
                "live capture needs root or the CAP_NET_RAW capability "
                "(e.g. sudo setcap cap_net_raw+eip $(readlink -f $(which python3)))"
            ) from None
        try:
            self._setup(index, code)
        except OSError as exc:
            self.sock.close()
            raise LiveError(f"cannot capture on {iface}: {exc.strerror or exc}") from None
        self._buf = bytearray(SNAPLEN)
        self.truncated = 0

    def _setup(self, index: int, code: bytes) -> None:
        s = self.sock
        with contextlib.suppress(OSError):  # SO_RCVBUFFORCE needs CAP_NET_ADMIN
            s.setsockopt(socket.SOL_SOCKET, 33, 8 << 20)  # SO_RCVBUFFORCE
        s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        if code:
            self._filter = ctypes.create_string_buffer(code, len(code))
            prog = struct.pack("HL", len(code) // 8, ctypes.addressof(self._filter))
            s.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, prog)
        if index:  # "any": an unbound ETH_P_ALL socket hears every interface
            s.bind((self.iface, ETH_P_ALL))
        s.setblocking(False)
        self._drain_prefilter()

    def _drain_prefilter(self) -> None:
        """Packets queued between socket() and the filter/bind are not ours: drop them."""
        while True:
            try:
                self.sock.recv(1)
            except BlockingIOError:
                return

    def fileno(self) -> int:
        return self.sock.fileno()

    def read(self, limit: int = 1000) -> list[tuple[int, bytes]]:
        """Up to ``limit`` queued frames as (kernel time ns, bytes); never blocks."""
        out: list[tuple[int, bytes]] = []
        buf, cspace = self._buf, socket.CMSG_SPACE(16)
        for _ in range(limit):
            try:
                n, anc, flags, addr = self.sock.recvmsg_into([buf], cspace)
            except BlockingIOError:
                break
            if addr[2] == PACKET_OUTGOING and addr[3] == ARPHRD_LOOPBACK:
                continue  # loopback: each packet is seen leaving and arriving; keep one
            if self.link_type == LINKTYPE_RAW and addr[1] not in (0x0800, 0x86DD):
                continue  # cooked socket: not IP (ARP, ...); nothing SIP can be in it
            if flags & socket.MSG_TRUNC:
                self.truncated += 1
            out.append((_timestamp(anc), bytes(buf[:n])))
        return out

    def drops(self) -> int:
        """Packets the kernel dropped since the last call (tpacket_stats)."""
        raw = self.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8)
        return int(struct.unpack("II", raw)[1])

    def close(self) -> None:
        self.sock.close()


def _timestamp(anc: list[tuple[int, int, bytes]]) -> int:
    for level, kind, data in anc:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= 16:
            sec, nsec = struct.unpack("qq", data[:16])
            return int(sec) * NS + int(nsec)
    return time.time_ns()


def _if_index(iface: str) -> int:
    try:
        return socket.if_nametoindex(iface)
    except OSError:
        names = ", ".join(sorted(n for _, n in socket.if_nameindex()))
        raise LiveError(f"no such interface: {iface} (available: {names}, any)") from None


def _if_type(iface: str) -> int:
    try:
        return int(Path("/sys/class/net", iface, "type").read_text())
    except (OSError, ValueError):
        return -1


# ----------------------------------------------------------------------------- HEP collector


class HepCollector:
    """HEP over UDP (v1/v2/v3) and TCP (HEP3) on one address and port."""

    def __init__(self, host: str, port: int) -> None:
        fam = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.addr = Endpoint(host, port)
        self.udp = socket.socket(fam, socket.SOCK_DGRAM)
        self.tcp = socket.socket(fam, socket.SOCK_STREAM)
        self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.udp.bind((host, port))
            self.tcp.bind((host, port))
            self.tcp.listen(16)
        except OSError as exc:
            self.close()
            why = "address in use" if exc.errno == errno.EADDRINUSE else exc.strerror or str(exc)
            raise LiveError(f"cannot listen for HEP on {self.addr}: {why}") from None
        with contextlib.suppress(OSError):
            self.udp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        self.udp.setblocking(False)
        self.tcp.setblocking(False)
        self.conns: dict[socket.socket, tuple[Endpoint, HepStream]] = {}
        self.stream_skipped = 0

    def read_udp(self, limit: int = 1000) -> list[tuple[int, Endpoint, bytes]]:
        out = []
        for _ in range(limit):
            try:
                data, peer = self.udp.recvfrom(65535)
            except BlockingIOError:
                break
            out.append((time.time_ns(), Endpoint(peer[0], peer[1]), data))
        return out

    def accept(self) -> socket.socket | None:
        try:
            conn, peer = self.tcp.accept()
        except BlockingIOError:
            return None
        conn.setblocking(False)
        self.conns[conn] = (Endpoint(peer[0], peer[1]), HepStream())
        return conn

    def read_tcp(self, conn: socket.socket) -> tuple[list[tuple[int, Endpoint, bytes]], bool]:
        """Whole HEP packets received on a connection; True when it closed."""
        peer, stream = self.conns[conn]
        try:
            data = conn.recv(65536)
        except BlockingIOError:
            return [], False
        except OSError:
            data = b""
        if not data:
            self.stream_skipped += stream.skipped_bytes + stream.pending
            del self.conns[conn]
            conn.close()
            return [], True
        now = time.time_ns()
        return [(now, peer, p) for p in stream.feed(data)], False

    def close(self) -> None:
        for s in (self.udp, self.tcp, *getattr(self, "conns", {})):
            s.close()


# ----------------------------------------------------------------------------- pcap out


class PcapWriter:
    """A classic pcap (ns resolution) written as frames arrive; with ``rotate`` a new
    file is started once one reaches that many bytes: ``out.pcap``, ``out-1.pcap``, ..."""

    def __init__(self, path: str, link_type: int, rotate: int | None = None) -> None:
        self.path = Path(path)
        self.link_type = link_type
        self.rotate = rotate
        self.files: list[Path] = []
        self.frames = 0
        self._open()

    def _open(self) -> None:
        n = len(self.files)
        p = self.path if n == 0 else self.path.with_name(f"{self.path.stem}-{n}{self.path.suffix}")
        p.parent.mkdir(parents=True, exist_ok=True)
        self.f = p.open("wb")
        self.f.write(struct.pack("<IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, SNAPLEN, self.link_type))
        self.size = 24
        self.files.append(p)

    def write(self, ts: int, frame: bytes) -> None:
        if self.rotate is not None and self.size + 16 + len(frame) > self.rotate and self.size > 24:
            self.f.close()
            self._open()
        sec, ns = divmod(max(ts, 0), NS)
        self.f.write(struct.pack("<IIII", sec & 0xFFFFFFFF, ns, len(frame), len(frame)) + frame)
        self.size += 16 + len(frame)
        self.frames += 1

    def flush(self) -> None:
        self.f.flush()

    def close(self) -> None:
        self.f.close()


def hep_frame(link_type: int, src: Endpoint, dst: Endpoint, payload: bytes) -> bytes:
    """A HEP packet as the UDP datagram agent -> collector, for the written capture."""
    from sipflow.ingest.pcapwrite import _udp

    packet = _udp(src, dst, payload[:65_000])
    if link_type == LINKTYPE_ETHERNET:
        return (_ETH_V6 if ":" in src.ip else _ETH_V4) + packet
    return packet
