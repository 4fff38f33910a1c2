"""The asyncio layer over real loopback sockets: bad input, half-open TCP, recording."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import sipflow
from sipflow.api import Options
from sipflow.b2bua.config import parse_config
from sipflow.b2bua.core import B2BUA
from sipflow.b2bua.transport import Node, Recorder
from sipflow.sip.message import SipResponse, parse_message


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def options(cid: str, drop: str = "") -> bytes:
    lines = [
        "OPTIONS sip:b2bua@127.0.0.1 SIP/2.0",
        "Via: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bK" + cid,
        "Max-Forwards: 70",
        "From: <sip:t@127.0.0.1>;tag=x",
        "To: <sip:b2bua@127.0.0.1>",
        f"Call-ID: {cid}",
        "CSeq: 1 OPTIONS",
        "Content-Length: 0",
    ]
    return (
        "\r\n".join(ln for ln in lines if not ln.startswith(drop or "\0")) + "\r\n\r\n"
    ).encode()


async def _scenario(tmp: Path) -> dict[str, object]:
    port = _port()
    cfg = parse_config(
        {
            "b2bua": {"tcp_idle_timeout": 0.5, "seed": 1},
            "listen": [
                {"transport": "udp", "port": port},
                {"transport": "tcp", "port": port},
            ],
        }
    )
    rec = Recorder.open(str(tmp / "t.pcap"), str(tmp / "t.log"))
    core = B2BUA(cfg)
    node = Node(core, cfg.listen, rec, cfg.tcp_idle_timeout_s)
    await node.start()
    loop = asyncio.get_running_loop()
    got: list[bytes] = []

    class Client(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: object) -> None:
            got.append(data)

    udp, _ = await loop.create_datagram_endpoint(Client, remote_addr=("127.0.0.1", port))
    udp.sendto(options("bad1", drop="Call-ID"))
    udp.sendto(b"\x00\x01 garbage that is not SIP\r\n\r\n")
    udp.sendto(options("good1"))
    # half-open TCP: a message that never ends
    r1, w1 = await asyncio.open_connection("127.0.0.1", port)
    w1.write(b"INVITE sip:x@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:9\r\n")
    # an oversized message on another connection
    r2, w2 = await asyncio.open_connection("127.0.0.1", port)
    w2.write(b"OPTIONS sip:x@127.0.0.1 SIP/2.0\r\nX-Pad: " + b"a" * 80_000)
    closed_big = await asyncio.wait_for(r2.read(), 5)
    t0 = loop.time()
    closed_idle = await asyncio.wait_for(r1.read(), 5)
    idle_after = loop.time() - t0
    await asyncio.sleep(0.1)
    udp.close()
    w1.close()
    w2.close()
    await node.stop()
    rec.close()
    return {
        "got": got,
        "closed_big": closed_big,
        "closed_idle": closed_idle,
        "idle_after": idle_after,
        "counts": node.counts,
        "dropped": core.stats.dropped,
    }


def test_bad_input_does_not_disturb_and_half_open_tcp_is_closed(tmp_path: Path) -> None:
    res = asyncio.run(_scenario(tmp_path))
    replies = [parse_message(d) for d in res["got"]]  # type: ignore[attr-defined]
    assert [(m.status, m.reason) for m in replies if isinstance(m, SipResponse)] == [
        (400, "Missing Call-Id header"),
        (200, "OK"),
    ]
    assert res["closed_big"] == b"" and res["closed_idle"] == b""
    assert res["counts"] == {"closed-oversize": 1, "closed-idle": 1}
    assert 0.3 < res["idle_after"] < 3.0  # type: ignore[operator]
    assert res["dropped"] == {"answered-400": 1, "unparseable": 1}
    # everything received and sent is in the pcap, readable by the analyser
    trace = sipflow.analyze([tmp_path / "t.pcap"], Options(keep_messages=True))
    assert {m.call_id for m in trace.message_list} >= {"good1"}
    assert "send" in (tmp_path / "t.log").read_text()


async def _refused(tmp: Path) -> list[bytes]:
    port, dead = _port(), _port()  # nothing listens on `dead`
    cfg = parse_config(
        {
            "b2bua": {"seed": 2},
            "listen": [{"transport": "udp", "port": port}, {"transport": "tcp", "port": port}],
            "route": [
                {
                    "match": ".",
                    "target": f"sip:x@127.0.0.1:{dead};transport=tcp",
                    "transport": "tcp",
                }
            ],
        }
    )
    node = Node(B2BUA(cfg), cfg.listen, Recorder())
    await node.start()
    loop = asyncio.get_running_loop()
    got: list[bytes] = []

    class Client(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: object) -> None:
            got.append(data)

    udp, _ = await loop.create_datagram_endpoint(Client, remote_addr=("127.0.0.1", port))
    invite = options("inv1").replace(b"OPTIONS", b"INVITE")
    udp.sendto(invite)
    for _ in range(100):
        if len(got) >= 2:
            break
        await asyncio.sleep(0.02)
    udp.close()
    await node.stop()
    return got


def test_refused_connection_is_a_transport_error_503(tmp_path: Path) -> None:
    got = [parse_message(d) for d in asyncio.run(_refused(tmp_path))]
    assert [m.status for m in got if isinstance(m, SipResponse)] == [100, 503]
