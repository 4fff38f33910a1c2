"""``sipflow regen auth407``: the real TLS wire, decrypted with the B2BUA's own key log.

The seed's flow (TCP caller, TLS trunk answering 407, SDES SRTP offer) is re-enacted;
tcpdump records lo on the run's ports (``out.wire.pcap``) while the B2BUA's TLS contexts
write ``out.keys.log``. Decrypting the wire with that key log must give, direction by
direction, byte for byte, the SIP messages of the B2BUA's own cleartext pcap, and the
same messages as its FreeSWITCH-style log; tshark, given the same key log, must find the
same start lines. Without the key log the TLS leg must stay hidden (so the wire really
is encrypted). TLS 1.3 runs in this process with OpenSSL's
defaults; TLS 1.2 (ECDHE, ``CLIENT_RANDOM`` key log lines) runs the CLI with an OpenSSL
config that caps the version.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

import sipflow
from sipflow.api import Options
from sipflow.b2bua.config import Config, parse_config
from sipflow.b2bua.scenarios import RegenResult, regen
from sipflow.b2bua.transport import serve
from sipflow.b2bua.wire import WireEvidence
from sipflow.ingest.keylog import parse_keylog
from sipflow.ingest.types import Endpoint, Transport
from sipflow.sip.message import SipMessage

pytestmark = pytest.mark.timeout(120)

Direction = tuple[Endpoint, Endpoint]


def _need_capture() -> None:
    if shutil.which("tcpdump") is None:
        pytest.skip("tcpdump is not installed: no wire capture to decrypt")
    if os.geteuid() != 0:
        pytest.skip("capturing on lo with tcpdump needs root")


def _wire(r: RegenResult) -> Path:
    if r.wire is None:  # tcpdump present and root, yet it could not capture (e.g. a sandbox)
        pytest.skip(f"no wire capture: {r.wire_note}")
    return r.wire


def per_direction(msgs: list[SipMessage]) -> dict[Direction, list[bytes]]:
    out: dict[Direction, list[bytes]] = defaultdict(list)
    for m in msgs:
        assert m.origin is not None and m.origin.src is not None and m.origin.dst is not None
        out[(m.origin.src, m.origin.dst)].append(m.raw)
    return dict(out)


def check_wire_equals_own_record(r: RegenResult, version: str) -> None:
    wire, keylog = _wire(r), r.keylog
    assert keylog is not None and keylog.exists()
    truth = json.loads(r.truth.read_text())
    b_leg = truth["calls"][0]["b_legs"][0]
    assert b_leg["transport"] == "TLS"

    own = sipflow.analyze([r.pcap]).message_list
    log = sipflow.analyze([r.log]).message_list
    trace = sipflow.analyze([wire], Options(tls_keylog=[str(keylog)]))
    got = trace.message_list
    # 2 INVITEs, 100, 407, ACK, 180, 200, ACK, BYE, 200 on each leg less what stays hop-local
    assert len(own) >= 16
    assert per_direction(got) == per_direction(own)  # byte for byte, in order, per direction
    assert sorted(m.raw for m in got) == sorted(m.raw for m in log)

    tls_msgs = [m for m in got if m.origin is not None and m.origin.transport is Transport.TLS]
    assert {m.call_id for m in tls_msgs} == {b_leg["call_id"]}
    assert sum(b"Proxy-Authorization: Digest " in m.raw for m in tls_msgs) == 1
    assert sum(m.body.count(b"a=crypto:") for m in tls_msgs if m.body) >= 4  # SDES offer

    (session,) = trace.to_dict()["tls_sessions"]
    assert (session["version"], session["decrypted"], session["carries_sip"]) == (
        version,
        True,
        True,
    )
    assert session["not_decrypted"] is None and session["certificate"] is not None
    assert int(b_leg["peer"].rsplit(":", 1)[1]) == session["server"]["port"]

    # the wire really is encrypted: the B leg's Call-ID is nowhere in the capture's bytes,
    # and without the key log none of its messages come out
    assert b_leg["call_id"].encode() not in wire.read_bytes()
    hidden = sipflow.analyze([wire]).message_list
    assert b_leg["call_id"] not in {m.call_id for m in hidden}
    assert len(hidden) == len(got) - len(tls_msgs)


@pytest.mark.peers
def test_tls13_wire_decrypts_to_the_b2buas_own_pcap_and_log(tmp_path: Path) -> None:
    _need_capture()
    r = regen("auth407", tmp_path / "auth407.pcap", seed=5)
    assert r.outcomes == {"answered": 1}
    assert r.keylog == tmp_path / "auth407.keys.log"
    labels = {ln.split()[0] for ln in r.keylog.read_text().splitlines() if ln[:1] != "#"}
    assert {"CLIENT_TRAFFIC_SECRET_0", "SERVER_TRAFFIC_SECRET_0"} <= labels
    assert _wire(r) == tmp_path / "auth407.wire.pcap"
    check_wire_equals_own_record(r, "TLS 1.3")
    if shutil.which("tshark") is not None:  # and Wireshark's dissectors agree, same key log
        assert tshark_sip(r) == sorted(
            first_line(m) for m in sipflow.analyze([r.pcap]).message_list
        )


def first_line(m: SipMessage) -> str:
    return m.raw.split(b"\r\n", 1)[0].decode()


def tshark_sip(r: RegenResult) -> list[str]:
    """Start lines of the SIP tshark finds in the wire with the key log (TLS port as SIP)."""
    assert r.wire is not None and r.keylog is not None
    truth = json.loads(r.truth.read_text())
    port = truth["calls"][0]["b_legs"][0]["peer"].rsplit(":", 1)[1]
    out = subprocess.run(
        ["tshark", "-n", "-r", str(r.wire), "-o", f"tls.keylog_file:{r.keylog}",
         "-d", f"tls.port=={port},sip", "-Y", "sip", "-T", "fields", "-E", "occurrence=a",
         "-E", "aggregator=|", "-e", "sip.Request-Line", "-e", "sip.Status-Line"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    lines = [x for row in out.stdout.splitlines() for x in row.split("\t") if x]
    return sorted(x for row in lines for x in row.split("|"))


@pytest.mark.peers
def test_tls12_wire_via_the_cli(tmp_path: Path) -> None:
    _need_capture()
    conf = tmp_path / "openssl.cnf"
    conf.write_text(
        "openssl_conf = default_conf\n[default_conf]\nssl_conf = ssl_sect\n"
        "[ssl_sect]\nsystem_default = sd\n[sd]\nMaxProtocol = TLSv1.2\n"
    )
    out = tmp_path / "seed.pcap"
    exe = [sys.executable, "-c", "from sipflow.cli import main; main()"]
    env = dict(os.environ, OPENSSL_CONF=str(conf))
    done = subprocess.run(
        [*exe, "regen", "auth407", "-o", str(out), "--seed", "9"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    keylog, wire = tmp_path / "seed.keys.log", tmp_path / "seed.wire.pcap"
    assert str(keylog) in done.stdout
    if not wire.exists():
        pytest.skip(f"no wire capture: {done.stdout.strip()}")
    assert str(wire) in done.stdout
    assert keylog.read_text().count("CLIENT_RANDOM ") >= 1  # TLS 1.2: the master secret
    r = RegenResult(out, out.with_suffix(".log"), out.with_suffix(".truth.json"), 1, {},
                    keylog=keylog, wire=wire)  # fmt: skip
    check_wire_equals_own_record(r, "TLS 1.2")

    analyzed = subprocess.run(
        [*exe, "analyze", str(wire), "--tls-keylog", str(keylog), "-f", "json"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert analyzed.returncode == 0, analyzed.stderr
    data = json.loads(analyzed.stdout)
    (call,) = data["calls"]
    assert (call["outcome"], call["final_code"]) == ("answered", 200)
    assert [f["code"] for f in data["findings"] if f["code"].startswith("tls.")] == []


# -- `sipflow b2bua`: the key log from the config, or SSLKEYLOGFILE ---------------------------


async def _options_over_tls(cfg: Config, client_keylog: Path) -> bytes:
    stop = asyncio.Event()
    served = asyncio.create_task(serve(cfg, stop))
    listen = cfg.listen[0]
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    ctx.keylog_filename = str(client_keylog)  # the caller's own view of the same secrets
    for _ in range(100):  # until the listener is up
        try:
            reader, writer = await asyncio.open_connection(listen.host, listen.port, ssl=ctx)
            break
        except OSError:
            await asyncio.sleep(0.02)
    writer.write(options_request())
    reply = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    writer.close()
    stop.set()
    await served
    return reply


def options_request() -> bytes:
    return (
        b"OPTIONS sip:b2bua@127.0.0.1 SIP/2.0\r\n"
        b"Via: SIP/2.0/TLS 127.0.0.1:9;branch=z9hG4bKkeylog1\r\n"
        b"Max-Forwards: 70\r\nFrom: <sip:t@127.0.0.1>;tag=x\r\nTo: <sip:b2bua@127.0.0.1>\r\n"
        b"Call-ID: keylog1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )


@pytest.mark.parametrize("where", ["config", "SSLKEYLOGFILE"])
def test_b2bua_writes_the_key_log_of_its_tls_listener(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    top: dict[str, object] = {"seed": 3}
    if where == "config":
        top["keylog"] = "b2bua.keys.log"  # relative to the config file's directory
    else:
        monkeypatch.setenv("SSLKEYLOGFILE", str(tmp_path / "b2bua.keys.log"))
    listen = {"transport": "tls", "port": port, "cert": str(tmp_path / "c.pem"),
              "key": str(tmp_path / "k.pem"), "self_signed": True}  # fmt: skip
    cfg = parse_config({"b2bua": top, "listen": [listen]}, tmp_path)
    reply = asyncio.run(_options_over_tls(cfg, tmp_path / "client.keys.log"))
    assert reply.startswith(b"SIP/2.0 200 ")
    ours = parse_keylog((tmp_path / "b2bua.keys.log").read_bytes())
    theirs = parse_keylog((tmp_path / "client.keys.log").read_bytes())
    assert ours.problems == [] and len(ours) >= 4  # TLS 1.3: 4 traffic secrets + exporter
    assert ours.secrets == theirs.secrets


# -- regen's wire evidence when it cannot capture -----------------------------------------------


def test_wire_evidence_says_why_when_tcpdump_cannot_capture(tmp_path: Path) -> None:
    out = tmp_path / "x.pcap"
    off = WireEvidence(out, enabled=False)  # no TLS leg: neither key log nor capture
    off.start([5060])
    assert (off.keylog, off.pcap, off.note) == (None, None, None)
    with WireEvidence(out, enabled=True, iface="sipflow-no-such-if0") as wire:
        wire.start([5060, 5061])
    assert wire.keylog == tmp_path / "x.keys.log" and wire.pcap is None
    assert wire.note is not None and "tcpdump" in wire.note
    assert not (tmp_path / "x.wire.pcap").exists()
