"""Run SIPp UAC -> sipflow b2bua (the CLI, a real process) -> SIPp UAS on loopback.

How this works: reuses tests/peers/harness.py (ports, tcpdump, SIPp argv and logs,
Kamailio). The B2BUA listens on the block's "proxy" port, so SIPp's UAC (run with
``proxy=True``) sends to it; a route sends every user on to the SIPp UAS (or to Kamailio
in front of the UAS when ``kamailio`` is set, on a fifth port). tcpdump captures all
the ports while it runs; the B2BUA writes its own pcap, log and truth JSON.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from peers.harness import (
    PeerError,
    Proc,
    Scenario,
    SippLog,
    _read_sipp,
    _sipp_argv,
    allocate_ports,
    capture,
    kamailio,
    port_bound,
    wait_for,
)

import sipflow
from sipflow.api import Options

REPO = Path(__file__).resolve().parents[2]


@dataclass
class B2buaRun:
    scenario: Scenario
    workdir: Path
    ports: tuple[int, int, int, int]
    tcpdump: Path
    pcap: Path
    log: Path
    truth: Path
    uac: SippLog
    uas: SippLog
    b2bua_output: str


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(
    path: Path,
    port: int,
    target: str,
    transport: str,
    match: str = "^(.*)$",
    extra_route: str = "",
    top: str = "",
    routes_before: str = "",
) -> None:
    wd = path.parent
    path.write_text(
        f"""[b2bua]
pcap = "{wd / "b2bua.pcap"}"
log = "{wd / "b2bua.log"}"
truth = "{wd / "b2bua.truth.json"}"
seed = 7
{top}

[[listen]]
transport = "udp"
host = "127.0.0.1"
port = {port}

[[listen]]
transport = "tcp"
host = "127.0.0.1"
port = {port}

{routes_before}
[[route]]
match = '{match}'
target = "{target}"
transport = "{transport}"
{extra_route}
"""
    )


def run_b2bua(
    sc: Scenario,
    workdir: Path,
    match: str = "^(.*)$",
    extra_route: str = "",
    kamailio_auth: bool = False,
    top: str = "",
) -> B2buaRun:
    """One SIPp scenario through the B2BUA (and optionally Kamailio behind it)."""
    wd = workdir / sc.name
    wd.mkdir(parents=True, exist_ok=True)
    ports = allocate_ports()
    uas, _uac, b2b, _media = ports
    use_kamailio = kamailio_auth or "kamailio" in sc.name
    kport = _free_port() if use_kamailio else 0
    t = sc.transport
    hop = kport if use_kamailio else uas
    target = f"sip:\\\\1@127.0.0.1:{hop};transport={t}"
    cfg = wd / "b2bua.toml"
    write_config(cfg, b2b, target, t, match, extra_route, top)
    bpf = " or ".join(f"port {p}" for p in (*ports[:3], *([kport] if kport else [])))
    tcpdump = wd / "tcpdump.pcap"
    with ExitStack() as stack:
        stack.enter_context(capture("tcpdump-lo", tcpdump, bpf, wd))
        if use_kamailio:
            # Kamailio's UAS-side ports come from the block; its own port is kport.
            kports = (uas, _uac, kport, _media)
            ksc = Scenario(
                sc.name, sc.uac, sc.uas, transport=t, proxy=True, proxy_auth=kamailio_auth
            )
            stack.enter_context(kamailio(ksc, kports, wd))
        b2bua = _start_b2bua(stack, cfg, wd, b2b, t)
        uas_p = Proc.start("sipp-uas", _sipp_argv(sc, "uas", ports, wd), wd)
        stack.callback(uas_p.stop, signal.SIGTERM, 5)
        wait_for(lambda: port_bound(uas, t, False), 10, "SIPp UAS to listen")
        uac_p = Proc.start("sipp-uac", _sipp_argv(sc, "uac", ports, wd), wd)
        uac_rc = uac_p.wait(sc.uac_timeout)
        try:
            uas_rc = uas_p.popen.wait(8)
        except subprocess.TimeoutExpired:
            uas_rc = uas_p.stop(signal.SIGINT, 5)
        b2bua.stop(signal.SIGINT, 10)
    return B2buaRun(
        sc,
        wd,
        ports,
        tcpdump,
        wd / "b2bua.pcap",
        wd / "b2bua.log",
        wd / "b2bua.truth.json",
        _read_sipp("uac", uac_rc, wd),
        _read_sipp("uas", uas_rc, wd),
        b2bua.text(),
    )


@dataclass
class TransferRun:
    """SIPp alice -> B2BUA -> SIPp bob, who REFERs alice to SIPp carol via the B2BUA."""

    transport: str
    workdir: Path
    ports: tuple[int, ...]
    tcpdump: Path
    pcap: Path
    log: Path
    truth: Path
    alice: SippLog
    bob: SippLog
    carol: SippLog


OWN_SCENARIOS = Path(__file__).resolve().parent / "scenarios"


def run_transfer(workdir: Path, calls: int, transport: str = "udp") -> TransferRun:
    """Blind transfers through the B2BUA between three real SIPp processes: alice
    (``uac_transferee.xml``), bob (``uas_transferor.xml``) and carol (``uas_answer.xml``);
    the B2BUA routes users ``carol*`` to carol and every other user to bob."""
    wd = workdir / f"{transport}_transfer"
    wd.mkdir(parents=True, exist_ok=True)
    ports = allocate_ports()
    bob, _alice, b2b, _media = ports
    carol_ports = allocate_ports()
    carol = carol_ports[0]
    sc = Scenario(
        f"{transport}_transfer",
        str(OWN_SCENARIOS / "uac_transferee.xml"),
        str(OWN_SCENARIOS / "uas_transferor.xml"),
        calls,
        rate=5,
        transport=transport,
        proxy=True,
    )
    carol_sc = Scenario("carol", "uac_answer.xml", "uas_answer.xml", calls, transport=transport)
    cfg = wd / "b2bua.toml"
    t = transport
    carol_route = f"""[[route]]
match = '^(carol.*)$'
target = "sip:\\\\1@127.0.0.1:{carol};transport={t}"
transport = "{t}"
"""
    write_config(cfg, b2b, f"sip:\\\\1@127.0.0.1:{bob};transport={t}", t, routes_before=carol_route)
    bpf = " or ".join(f"port {p}" for p in (*ports[:3], carol))
    tcpdump = wd / "tcpdump.pcap"
    carol_wd = wd / "carol"
    carol_wd.mkdir(exist_ok=True)
    with ExitStack() as stack:
        stack.enter_context(capture("tcpdump-lo", tcpdump, bpf, wd))
        b2bua = _start_b2bua(stack, cfg, wd, b2b, t)
        procs = {}
        for name, scen, prts, where in (
            ("carol", carol_sc, carol_ports, carol_wd),
            ("bob", sc, ports, wd),
        ):
            proc = Proc.start(f"sipp-{name}", _sipp_argv(scen, "uas", prts, where), where)
            stack.callback(proc.stop, signal.SIGTERM, 5)
            wait_for(lambda p=prts[0]: port_bound(p, t, False), 10, f"SIPp {name} to listen")
            procs[name] = proc
        alice = Proc.start("sipp-uac", _sipp_argv(sc, "uac", ports, wd), wd)
        alice_rc = alice.wait(sc.uac_timeout)
        rcs = {}
        for name, proc in procs.items():
            try:
                rcs[name] = proc.popen.wait(8)
            except subprocess.TimeoutExpired:
                rcs[name] = proc.stop(signal.SIGINT, 5)
        b2bua.stop(signal.SIGINT, 10)
    return TransferRun(
        transport,
        wd,
        (*ports, carol),
        tcpdump,
        wd / "b2bua.pcap",
        wd / "b2bua.log",
        wd / "b2bua.truth.json",
        _read_sipp("uac", alice_rc, wd),
        _read_sipp("uas", rcs["bob"], wd),
        _read_sipp("uas", rcs["carol"], carol_wd),
    )


def _start_b2bua(stack: ExitStack, cfg: Path, wd: Path, port: int, t: str) -> Proc:
    """``sipflow b2bua -c cfg`` started, stopped with SIGINT when ``stack`` closes, and
    listening on ``port`` (PeerError if it exits first)."""
    argv = [sys.executable, "-c", "from sipflow.cli import main; main()", "b2bua", "-c", str(cfg)]
    b2bua = Proc.start("b2bua", argv, wd)
    stack.callback(b2bua.stop, signal.SIGINT, 10)
    wait_for(
        lambda: port_bound(port, t, False) or b2bua.popen.poll() is not None,
        15,
        "the B2BUA to listen",
    )
    if b2bua.popen.poll() is not None:
        raise PeerError(f"b2bua exited: {b2bua.text()[-2000:]}")
    return b2bua


def wire_messages(path: Path) -> Counter[tuple[str, str, bytes]]:
    """(src, dst, raw bytes) of every SIP message sipflow finds in a capture, counted: what
    the B2BUA's own pcap and a tcpdump capture of the same run must share."""
    trace = sipflow.analyze([path], Options(keep_messages=True))
    out: Counter[tuple[str, str, bytes]] = Counter()
    for m in trace.message_list:
        assert m.origin is not None
        out[(str(m.origin.src), str(m.origin.dst), m.raw)] += 1
    return out
