"""``sipflow regen SCENARIO -o out.pcap``: re-enact a flow on loopback, write its evidence.

How this works: a scenario names the UAC's transport, the B2BUA's route (transport,
credentials, no-answer timeout) and the calls the built-in UAC places; the built-in UAS
behaves by the Request-URI user. :func:`regen` starts three nodes in one event loop on
free 127.0.0.1 ports (UAS, B2BUA, UAC), runs until every call ended (bounded), and
writes the B2BUA's pcap (``out.pcap``: both legs, real timestamps; TLS legs as
cleartext SIP over TCP on the same ports), its FreeSWITCH-style log (``out.log``) and
the truth JSON (``out.truth.json``).
"""

from __future__ import annotations

import asyncio
import re
import socket
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from sipflow.b2bua.config import Config, Listen, Route
from sipflow.b2bua.core import B2BUA
from sipflow.b2bua.transport import Node, Recorder
from sipflow.b2bua.truth import dumps
from sipflow.b2bua.ua import PlannedCall, Uac, Uas
from sipflow.ingest.types import Endpoint, Transport

HOST = "127.0.0.1"


@dataclass(frozen=True)
class Scenario:
    name: str
    about: str
    calls: tuple[PlannedCall, ...]
    caller: Transport = Transport.UDP
    callee: Transport = Transport.UDP
    credentials: bool = False
    srtp: bool = False
    timeout_s: float | None = None
    limit_s: float = 20.0
    extra: dict[str, str] = field(default_factory=dict)


def _load(n: int, rate: float) -> tuple[PlannedCall, ...]:
    return tuple(
        PlannedCall(f"answer-{i}", at_ms=int(i * 1000 / rate), hangup_ms=1500) for i in range(n)
    )


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(
            "basic", "answered call over UDP, caller hangs up after 1 s", (PlannedCall("answer"),)
        ),
        Scenario(
            "busy",
            "callee answers 486 Busy Here; mapped back to the caller",
            (PlannedCall("busy"),),
        ),
        Scenario(
            "notfound", "callee answers 404 Not Found; mapped back", (PlannedCall("notfound"),)
        ),
        Scenario(
            "cancel",
            "caller CANCELs while ringing: 200/487 on both legs",
            (PlannedCall("ring", cancel_ms=600),),
        ),
        Scenario(
            "noanswer",
            "callee rings forever; the B2BUA's 2 s no-answer timer CANCELs it, 408 to the caller",
            (PlannedCall("ring"),),
            timeout_s=2.0,
        ),
        Scenario(
            "auth407",
            "the seed's flow: TCP caller, TLS trunk answering 407, INVITE again with "
            "Proxy-Authorization and an SDES SRTP offer",
            (PlannedCall("auth407"),),
            caller=Transport.TCP,
            callee=Transport.TLS,
            credentials=True,
            srtp=True,
        ),
        Scenario(
            "hold",
            "answered call put on hold (re-INVITE sendonly) and back (sendrecv), then BYE",
            (PlannedCall("hold", hangup_ms=None, hold=True),),
        ),
        Scenario(
            "load",
            "30 calls at 10 calls/s, each 1.5 s long (overlapping), over UDP",
            _load(30, 10.0),
            limit_s=30.0,
        ),
    )
}


def describe() -> str:
    """``sipflow regen --list``."""
    width = max(len(n) for n in SCENARIOS)
    return "".join(f"{s.name:<{width}}  {s.about}\n" for s in SCENARIOS.values())


def _free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port free for both UDP and TCP on 127.0.0.1."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((HOST, 0))
            port = int(s.getsockname()[1])
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                u.bind((HOST, port))
        except OSError:
            continue
        return port
    raise OSError("no free port")


@dataclass
class RegenResult:
    pcap: Path
    log: Path
    truth: Path
    calls: int
    outcomes: dict[str, int]
    dropped: dict[str, dict[str, int]] = field(default_factory=dict)
    """What each agent (uac, b2bua, uas) dropped, by reason."""


async def _run(sc: Scenario, out: Path, tmp: Path, seed: int | None) -> RegenResult:
    uas_port, b2b_port, tls_port, uac_port = (_free_port() for _ in range(4))
    cert, key = str(tmp / "cert.pem"), str(tmp / "key.pem")

    def listen(t: Transport, port: int) -> Listen:
        tls = t is Transport.TLS
        return Listen(t, HOST, port, cert if tls else None, key if tls else None, tls)

    def seeded(n: int) -> int | None:  # one stream per agent: tags never collide
        return None if seed is None else seed * 3 + n

    uas = Uas(listen(sc.callee, uas_port), seeded(0))
    t = sc.callee.value.lower()
    target = f"sip:\\1@{HOST}:{uas_port};transport={t}"
    route = Route(
        re.compile(r"^(.+)$"),
        target,
        sc.callee,
        "alice" if sc.credentials else None,
        "secret" if sc.credentials else None,
        sc.srtp,
        sc.timeout_s,
    )
    b2b_listen = (
        Listen(Transport.UDP, HOST, b2b_port),
        Listen(Transport.TCP, HOST, b2b_port),
        listen(Transport.TLS, tls_port),
    )
    config = Config(b2b_listen, (route,), seed=seeded(1))
    core = B2BUA(config)
    log, truth = out.with_suffix(".log"), out.with_suffix(".truth.json")
    recorder = Recorder.open(str(out), str(log))
    uac = Uac(listen(sc.caller, uac_port), Endpoint(HOST, b2b_port), seeded(2))
    nodes = [
        Node(uas, uas.config.listen),
        Node(core, b2b_listen, recorder),
        Node(uac, uac.config.listen),
    ]
    for node in nodes:
        await node.start()
    uac.start(list(sc.calls), time.time_ns())
    nodes[2].rearm()
    deadline = time.monotonic() + sc.limit_s
    while time.monotonic() < deadline and not (uac.idle and not core.calls and not uas.calls):
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)  # last ACKs / 200 to BYE
    for node in nodes:
        await node.stop()
    recorder.close()
    calls = core.finished + list(core.calls.values())
    truth.write_text(dumps(calls, sorted(recorder.tls_ports), {"scenario": sc.name}))
    outcomes: dict[str, int] = {}
    for c in calls:
        outcomes[c.outcome] = outcomes.get(c.outcome, 0) + 1
    dropped = {"uac": uac.stats.dropped, "b2bua": core.stats.dropped, "uas": uas.stats.dropped}
    return RegenResult(out, log, truth, len(calls), outcomes, dropped)


def regen(name: str, out: str | Path, seed: int | None = None) -> RegenResult:
    """Run scenario ``name``; write ``out`` (pcap), ``.log`` and ``.truth.json`` beside it."""
    sc = SCENARIOS[name]
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="sipflow-regen-") as tmp:
        return asyncio.run(_run(sc, path, Path(tmp), seed))
