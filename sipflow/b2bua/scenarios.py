"""``sipflow regen SCENARIO -o out.pcap``: re-enact a flow on loopback, write its evidence.

How this works: a scenario names the UAC's transport, the B2BUA's route (transport,
credentials, no-answer timeout) and the calls the built-in UAC places; the built-in UAS
behaves by the Request-URI user. :func:`regen` starts three nodes in one event loop on
free 127.0.0.1 ports (UAS, B2BUA, UAC), runs until every call ended (bounded), and
writes the B2BUA's pcap (``out.pcap``: both legs, real timestamps; TLS legs as
cleartext SIP over TCP on the same ports), its FreeSWITCH-style log (``out.log``) and
the truth JSON (``out.truth.json``). A scenario with a TLS leg also leaves the B2BUA's
TLS key log (``out.keys.log``) and, when tcpdump may capture on lo, the real encrypted
wire (``out.wire.pcap``; :mod:`sipflow.b2bua.wire`). ``load`` and ``traffic`` take a
number of calls and a rate (:func:`scenario`); any scenario can have the B2BUA add
``X-CID`` to its B legs. A scenario with ``media="anchor"`` runs the B2BUA with anchored
media and has both UAs send ``rtp_packets`` RTP packets per answered call, on port pairs
found free on 127.0.0.1 at the start: the pcap then holds the RTP of both legs (SRTP on
an SRTP leg) beside the SIP.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import re
import socket
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sipflow.b2bua.config import Config, Listen, Route
from sipflow.b2bua.core import B2BUA
from sipflow.b2bua.transport import Node, Recorder
from sipflow.b2bua.truth import dumps
from sipflow.b2bua.ua import PlannedCall, Uac, Uas
from sipflow.b2bua.wire import WireEvidence
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
    x_cid: bool = False
    """The B2BUA adds ``X-CID: <A-leg Call-ID>`` to its B-leg INVITEs (Config.x_cid)."""
    media: str = "pass"
    """The B2BUA's ``media`` mode: ``pass`` or ``anchor`` (Config.media)."""
    rtp_packets: int = 0
    """RTP packets each UA sends per answered call (20 ms apart; 0: no media)."""


def _load(n: int, rate: float, seed: int = 0) -> tuple[PlannedCall, ...]:
    return tuple(
        PlannedCall(f"answer-{i}", at_ms=int(i * 1000 / rate), hangup_ms=1500) for i in range(n)
    )


TRAFFIC_MIX: dict[str, float] = {"answer": 0.70, "busy": 0.10, "notfound": 0.08, "cancel": 0.12}
"""Share of each outcome in ``traffic``: answered, 486, 404, CANCEL while ringing."""
TRAFFIC_NUMBERS = 10
"""Called numbers are drawn from this many: concurrent calls often share a callee."""
HOLD_MS = (2000, 8000)
"""Answered calls last this long (uniform): at 20 calls/s about 70 are up at once."""
CANCEL_MS = (300, 2500)


def _traffic(n: int, rate: float, seed: int = 0) -> tuple[PlannedCall, ...]:
    """Poisson arrivals (seeded; gaps scaled so the run averages ``rate``), mixed outcomes
    and hold times, callees shared between concurrent calls."""
    rnd = random.Random(seed)
    kinds, weights = list(TRAFFIC_MIX), list(TRAFFIC_MIX.values())
    gaps = [rnd.expovariate(1.0) for _ in range(n - 1)]
    scale = (n - 1) / rate * 1000 / (sum(gaps) or 1.0)  # exactly ``rate`` over the run
    at, out = 0.0, []
    for k in range(n):
        at = at + gaps[k - 1] * scale if k else 0.0
        kind = rnd.choices(kinds, weights)[0]
        number = f"{2000 + rnd.randrange(TRAFFIC_NUMBERS)}"
        if kind == "cancel":  # the UAS rings forever; the caller gives up
            cancel = rnd.randint(*CANCEL_MS)
            call = PlannedCall(f"ring-{number}", at_ms=int(at), hangup_ms=None, cancel_ms=cancel)
        else:
            call = PlannedCall(f"{kind}-{number}", at_ms=int(at), hangup_ms=rnd.randint(*HOLD_MS))
        out.append(call)
    return tuple(out)


Plan = Callable[[int, float, int], tuple[PlannedCall, ...]]
SIZED: dict[str, tuple[Plan, int, float]] = {
    "load": (_load, 30, 10.0),
    "traffic": (_traffic, 60, 20.0),
}
"""Scenarios built from a number of calls, a rate and a seed: (plan, calls, rate) defaults."""


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
            "auth407-anchor",
            "auth407 with anchored media: the B2BUA relays RTP through its own ports; both "
            "UAs send 50 packets of PCMU (20 ms), plain RTP on the caller's leg, SDES SRTP "
            "(AEAD_AES_256_GCM) on the TLS trunk leg",
            (PlannedCall("auth407", hangup_ms=1500),),
            caller=Transport.TCP,
            callee=Transport.TLS,
            credentials=True,
            srtp=True,
            media="anchor",
            rtp_packets=50,
        ),
        Scenario(
            "hold",
            "answered call put on hold (re-INVITE sendonly) and back (sendrecv), then BYE",
            (PlannedCall("hold", hangup_ms=None, hold=True),),
        ),
        Scenario(
            "transfer",
            "blind transfer (REFER): the callee transfers the caller to another user; 202, "
            "NOTIFY sipfrag, INVITE with Referred-By, re-INVITE of the caller, callee BYE",
            (PlannedCall("transfer", hangup_ms=2000),),
        ),
        Scenario(
            "load",
            "30 calls at 10 calls/s, each 1.5 s long (overlapping), over UDP",
            _load(30, 10.0),
            limit_s=30.0,
        ),
        Scenario(
            "traffic",
            "60 calls at 20 calls/s (Poisson), overlapping: 70 % answered (2-8 s), busy, "
            "not found, cancelled while ringing; callees from 10 numbers",
            _traffic(60, 20.0),
            limit_s=30.0,
        ),
    )
}


def scenario(
    name: str,
    calls: int | None = None,
    rate: float | None = None,
    x_cid: bool = False,
    seed: int | None = None,
) -> Scenario:
    """Scenario ``name``, resized to ``calls`` at ``rate`` calls/s (``load``, ``traffic``;
    the plan drawn from ``seed``), with ``X-CID`` on the B legs when ``x_cid``.
    ValueError for a size on another scenario."""
    sc = SCENARIOS[name]
    sized = calls is not None or rate is not None
    if sized and name not in SIZED:
        raise ValueError(f"scenario {name!r} has a fixed set of calls")
    if name in SIZED and (sized or seed is not None):
        plan, n0, r0 = SIZED[name]
        n, r = calls if calls is not None else n0, rate if rate is not None else r0
        if n < 1 or r <= 0:
            raise ValueError("calls must be at least 1 and rate above 0")
        limit = max(sc.limit_s, n / r + HOLD_MS[1] / 1000 + 15.0)
        about = f"{n} calls at {r:g} calls/s; {sc.about.split(', ', 1)[-1]}"
        sc = dataclasses.replace(sc, about=about, calls=plan(n, r, seed or 0), limit_s=limit)
    return dataclasses.replace(sc, x_cid=True) if x_cid else sc


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


def _free_pairs(n: int) -> int:
    """The first of ``2 * n`` consecutive UDP ports (from an even one) free on 127.0.0.1."""
    rnd = random.Random()
    for _ in range(100):
        base = rnd.randrange(20000, 60000 - 2 * n, 2)
        socks: list[socket.socket] = []
        try:
            for port in range(base, base + 2 * n):
                u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(u)
                u.bind((HOST, port))
        except OSError:
            continue
        finally:
            for u in socks:
                u.close()
        return base
    raise OSError("no free RTP ports")


@dataclass
class RegenResult:
    pcap: Path
    log: Path
    truth: Path
    calls: int
    outcomes: dict[str, int]
    dropped: dict[str, dict[str, int]] = field(default_factory=dict)
    """What each agent (uac, b2bua, uas) dropped, by reason."""
    keylog: Path | None = None
    """The B2BUA's TLS key log (NSS format), for scenarios with a TLS leg."""
    wire: Path | None = None
    """tcpdump's capture of the run on lo (TLS legs encrypted), when it could run."""
    wire_note: str | None = None
    """Why a TLS scenario has no wire capture."""
    nodes: dict[str, dict[str, int]] = field(default_factory=dict)
    """What each node's sockets counted (uac, b2bua, uas): e.g. ``media-bind-failed``."""
    media: dict[str, int] = field(default_factory=dict)
    """RTP/RTCP datagrams the UAs sent and received (``uac_out``, ``uas_in``, ...)."""


async def _run(
    sc: Scenario, out: Path, tmp: Path, seed: int | None, wire: WireEvidence
) -> RegenResult:
    uas_port, b2b_port, tls_port, uac_port = (_free_port() for _ in range(4))
    ranges: list[tuple[int, int]] = []
    bases: list[int] = []
    if sc.media == "anchor" or sc.rtp_packets:  # B2BUA: two pairs per call; each UA: one
        n = min(len(sc.calls), 500)
        bases = [_free_pairs(2 * n), _free_pairs(n), _free_pairs(n)]
        ranges = [(bases[0], bases[0] + 4 * n - 1), (bases[1], bases[1] + 2 * n - 1)]
        ranges.append((bases[2], bases[2] + 2 * n - 1))
    wire.start((uas_port, b2b_port, tls_port, uac_port), ranges)
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
    config = Config(b2b_listen, (route,), seed=seeded(1), x_cid=sc.x_cid, media=sc.media)
    if sc.media == "anchor":
        config = dataclasses.replace(config, rtp_ports=ranges[0], media_ip=HOST)
    core = B2BUA(config)
    log, truth = out.with_suffix(".log"), out.with_suffix(".truth.json")
    recorder = Recorder.open(str(out), str(log), str(wire.keylog) if wire.keylog else None)
    uac = Uac(listen(sc.caller, uac_port), Endpoint(HOST, b2b_port), seeded(2))
    if sc.rtp_packets:
        uas.rtp_packets = uac.rtp_packets = sc.rtp_packets
        uas.rtp_base, uac.rtp_base = bases[1], bases[2]
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
    extra = {"scenario": sc.name, "x_cid": sc.x_cid, "planned_calls": len(sc.calls)}
    truth.write_text(dumps(calls, sorted(recorder.tls_ports), extra))
    outcomes: dict[str, int] = {}
    for c in calls:
        outcomes[c.outcome] = outcomes.get(c.outcome, 0) + 1
    dropped = {"uac": uac.stats.dropped, "b2bua": core.stats.dropped, "uas": uas.stats.dropped}
    result = RegenResult(out, log, truth, len(calls), outcomes, dropped, wire.keylog)
    result.nodes = {k: n.counts for k, n in zip(("uas", "b2bua", "uac"), nodes, strict=True)}
    result.media = {"uac_out": uac.media_out, "uac_in": uac.media_in}
    result.media.update(uas_out=uas.media_out, uas_in=uas.media_in)
    return result


def regen(
    name: str,
    out: str | Path,
    seed: int | None = None,
    calls: int | None = None,
    rate: float | None = None,
    x_cid: bool = False,
) -> RegenResult:
    """Run scenario ``name`` (sized and with X-CID as :func:`scenario` says); write ``out``
    (pcap), ``.log`` and ``.truth.json`` beside it."""
    sc = scenario(name, calls, rate, x_cid, seed)
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    has_tls = Transport.TLS in (sc.caller, sc.callee)
    with (
        tempfile.TemporaryDirectory(prefix="sipflow-regen-") as tmp,
        WireEvidence(path, has_tls) as wire,
    ):
        result = asyncio.run(_run(sc, path, Path(tmp), seed, wire))
    result.wire, result.wire_note = wire.pcap, wire.note
    return result
