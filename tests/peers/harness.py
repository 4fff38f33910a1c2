"""Real peers on loopback: SIPp UAC/UAS, an optional Kamailio proxy, packet capture.

How this works: :func:`run_scenario` takes a :class:`Scenario` (which SIPp XML files,
transport, address family, proxy or not), picks a free block of ports, starts the
captures (tcpdump on ``lo`` or ``any``, dumpcap), waits until each says it is
listening, starts Kamailio (when asked) and the SIPp UAS, waits for their sockets in
``/proc/net``, runs the SIPp UAC to completion, then stops everything and waits for
the capture files to be flushed. Every process has a deadline and is killed in
teardown. What each peer logged (SIPp ``-trace_shortmsg`` / ``-trace_stat`` /
``-trace_err``) is parsed into plain values, the oracles the tests compare with:
:class:`SippLog` (what SIPp sent and received) and :func:`tshark_sip_stat`.

Only 127.0.0.1 and ::1 are used; everything is written under the directory given.
"""

from __future__ import annotations

import csv
import functools
import re
import shutil
import signal
import socket
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

SCENARIOS = Path(__file__).resolve().parent / "scenarios"
KAMAILIO_CFG = Path(__file__).resolve().parent / "kamailio" / "proxy.cfg.in"
KAMAILIO_MODULES = next(
    (str(p) + "/" for p in sorted(Path("/usr/lib").glob("*/kamailio/modules")) if p.is_dir()),
    "/usr/lib/x86_64-linux-gnu/kamailio/modules/",
)
PEER_TOOLS = ("sipp", "tcpdump", "dumpcap", "tshark", "kamailio")

# Ports: one block of 4 per scenario run (UAS, UAC, proxy, media), from this range.
PORT_FIRST = 5100
PORT_LAST = 5299
PASSWORD = "secret"
USER = "alice"


class PeerError(RuntimeError):
    """A peer did not start, did not finish in time, or wrote no usable log."""


def missing_tools(tools: Sequence[str] = PEER_TOOLS) -> list[str]:
    return [t for t in tools if shutil.which(t) is None]


# ---------------------------------------------------------------- processes


@dataclass
class Proc:
    """A child process with its stdout/stderr in files and a hard deadline."""

    name: str
    popen: subprocess.Popen[bytes]
    out: Path
    err: Path

    @classmethod
    def start(cls, name: str, argv: list[str], cwd: Path) -> Proc:
        out, err = cwd / f"{name}.out", cwd / f"{name}.err"
        with out.open("wb") as o, err.open("wb") as e:
            p = subprocess.Popen(argv, cwd=cwd, stdout=o, stderr=e, stdin=subprocess.DEVNULL)
        return cls(name, p, out, err)

    def wait(self, timeout: float) -> int:
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise PeerError(f"{self.name} did not finish within {timeout} s") from None

    def stop(self, sig: int = signal.SIGINT, timeout: float = 10.0) -> int:
        """Signal the process, wait for it; SIGKILL if it does not exit in time."""
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.popen.returncode

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(5)

    def text(self) -> str:
        return self.out.read_text(errors="replace") + self.err.read_text(errors="replace")


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise PeerError(f"timed out after {timeout} s waiting for {what}")


def _proc_net_ports(table: str) -> set[int]:
    """Local ports bound in /proc/net/<table> (udp/tcp sockets; TCP only LISTEN)."""
    ports: set[int] = set()
    try:
        lines = Path("/proc/net", table).read_text().splitlines()[1:]
    except OSError:
        return ports
    for line in lines:
        cols = line.split()
        if table.startswith("tcp") and cols[3] != "0A":  # 0A = LISTEN
            continue
        ports.add(int(cols[1].rsplit(":", 1)[1], 16))
    return ports


def port_bound(port: int, transport: str, ipv6: bool) -> bool:
    table = ("udp" if transport == "udp" else "tcp") + ("6" if ipv6 else "")
    return port in _proc_net_ports(table)


def _port_free(port: int) -> bool:
    for fam, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
            with socket.socket(fam, kind) as s:
                try:
                    s.bind((host, port))
                except OSError:
                    return False
    return True


_next_block = PORT_FIRST


@functools.cache
def _tshark_ports() -> frozenset[int]:
    """Ports tshark decodes as another protocol by default (e.g. UDP 5246 CAPWAP, TCP 5222
    XMPP): SIP on them is not SIP to the tshark oracle, so test blocks avoid them."""
    if shutil.which("tshark") is None:
        return frozenset()
    out = subprocess.run(
        ["tshark", "-G", "decodes"], capture_output=True, text=True, timeout=60, check=False
    ).stdout
    ports = set()
    for line in out.splitlines():
        table, _, rest = line.partition("\t")
        value = rest.partition("\t")[0]
        if table in ("udp.port", "tcp.port", "sctp.port") and value.isdigit():
            ports.add(int(value))
    return frozenset(ports)


def allocate_ports() -> tuple[int, int, int, int]:
    """Next block of 4 free ports (UAS, UAC, proxy, media) in PORT_FIRST..PORT_LAST, none of
    them a port tshark gives to another protocol; after the last block, blocks freed by
    earlier tests are used again."""
    global _next_block
    for _ in range((PORT_LAST - PORT_FIRST + 1) // 4):
        if _next_block + 3 > PORT_LAST:
            _next_block = PORT_FIRST
        block = _next_block
        _next_block += 4
        ports = range(block, block + 4)
        if not any(p in _tshark_ports() for p in ports) and all(_port_free(p) for p in ports):
            return block, block + 1, block + 2, block + 3
    raise PeerError("no free port block left in the test range")


# ---------------------------------------------------------------- capture

CAPTURE_TOOLS = ("tcpdump-lo", "tcpdump-any", "dumpcap")
_READY = {"tcpdump": "listening on", "dumpcap": "Capturing on"}


def capture_argv(tool: str, out: Path, bpf: str) -> list[str]:
    if tool == "tcpdump-lo":
        # -U + --immediate-mode: every packet reaches the file at once; -Z root keeps
        # tcpdump from dropping to a user that cannot write in the tmp dir.
        return [
            "tcpdump",
            "-i",
            "lo",
            "-n",
            "-U",
            "--immediate-mode",
            "-B",
            "65536",
            "-Z",
            "root",
            "-s",
            "0",
            "-w",
            str(out),
            bpf,
        ]
    if tool == "tcpdump-any":  # tcpdump 4.99 writes LINUX_SLL2 for "any"
        return [
            "tcpdump",
            "-i",
            "any",
            "-n",
            "-U",
            "--immediate-mode",
            "-B",
            "65536",
            "-Z",
            "root",
            "-s",
            "0",
            "-w",
            str(out),
            bpf,
        ]
    if tool == "dumpcap":  # pcapng
        return ["dumpcap", "-i", "lo", "-q", "-B", "64", "-f", bpf, "-w", str(out)]
    raise ValueError(f"unknown capture tool {tool}")


@contextmanager
def capture(tool: str, out: Path, bpf: str, workdir: Path) -> Iterator[Path]:
    """Capture on loopback while the block runs; the file is complete on exit."""
    name = f"cap-{tool}"
    proc = Proc.start(name, capture_argv(tool, out, bpf), workdir)
    word = _READY[tool.split("-")[0]]
    try:
        wait_for(
            lambda: word in proc.err.read_text(errors="replace") or proc.popen.poll() is not None,
            10,
            f"{tool} to listen",
        )
        if proc.popen.poll() is not None:
            raise PeerError(f"{tool} exited: {proc.text()}")
        time.sleep(0.2)
        yield out
        time.sleep(0.3)  # let the last packets through the ring buffer
    finally:
        proc.stop(signal.SIGINT, 10)
    if not out.exists() or out.stat().st_size < 24:
        raise PeerError(f"{tool} wrote no capture: {proc.text()}")
    dropped = capture_drops(proc.err.read_text(errors="replace"))
    if dropped != 0:
        raise PeerError(f"{tool} lost packets (dropped={dropped}): {proc.text()}")


_DROPS = (
    re.compile(r"(\d+) packets? dropped by kernel"),  # tcpdump
    re.compile(r"received/dropped on interface .*: \d+/(\d+)"),  # dumpcap
)


def capture_drops(stderr: str) -> int | None:
    """Packets the capture tool says it lost (None when it printed no statistics)."""
    found = [int(m.group(1)) for rx in _DROPS for m in rx.finditer(stderr)]
    return sum(found) if found else None


# ---------------------------------------------------------------- SIPp logs


@dataclass(frozen=True)
class ShortMsg:
    """One line of SIPp's -trace_shortmsg log: a message SIPp sent (S) or received (R)."""

    ts: float
    direction: str
    call_id: str
    cseq_method: str
    first_line: str

    @property
    def is_request(self) -> bool:
        return not self.first_line.startswith("SIP/2.0")

    @property
    def method(self) -> str:
        return self.first_line.split(" ", 1)[0]

    @property
    def code(self) -> int:
        return int(self.first_line.split(" ", 2)[1])


def parse_shortmsg(path: Path) -> list[ShortMsg]:
    out = []
    for line in path.read_text(errors="replace").splitlines():
        cols = line.split("\t")
        if len(cols) < 7:
            continue
        cseq = cols[5].removeprefix("CSeq:").strip().split()
        out.append(ShortMsg(float(cols[2]), cols[3], cols[4], cseq[-1], cols[6].strip()))
    return out


def parse_stat_csv(path: Path) -> dict[str, str]:
    """Last row of a SIPp -trace_stat CSV as {column: value}."""
    rows = list(csv.reader(path.open(newline=""), delimiter=";"))
    if len(rows) < 2:
        raise PeerError(f"empty SIPp stat file {path}")
    return dict(zip(rows[0], rows[-1], strict=False))


@dataclass
class SippLog:
    """What one SIPp instance did: its stat counters and every message it sent/received."""

    role: str
    returncode: int
    stats: dict[str, str]
    messages: list[ShortMsg]
    errors: str

    def stat(self, name: str) -> int:
        return int(self.stats[f"{name}(C)"])

    def sent(self) -> list[ShortMsg]:
        return [m for m in self.messages if m.direction == "S"]

    def received(self) -> list[ShortMsg]:
        return [m for m in self.messages if m.direction == "R"]


def count_wire(msgs: Sequence[ShortMsg]) -> tuple[Counter[str], Counter[str]]:
    """(requests by method, responses by code as str) of the given messages."""
    req: Counter[str] = Counter()
    resp: Counter[str] = Counter()
    for m in msgs:
        if m.is_request:
            req[m.method] += 1
        else:
            resp[str(m.code)] += 1
    return req, resp


def invite_finals(msgs: Sequence[ShortMsg]) -> dict[str, list[int]]:
    """Call-ID -> final (>= 200) response codes to INVITE, in order, as one side saw them."""
    out: dict[str, list[int]] = {}
    for m in msgs:
        if m.is_request and m.method == "INVITE":
            out.setdefault(m.call_id, [])
        elif not m.is_request and m.cseq_method == "INVITE" and m.code >= 200:
            codes = out.setdefault(m.call_id, [])
            if not codes or codes[-1] != m.code:  # a retransmitted final is one answer
                codes.append(m.code)
    return out


# ---------------------------------------------------------------- tshark oracle


@dataclass(frozen=True)
class SipStat:
    """`tshark -z sip,stat` table: requests by method, responses by code, resent count."""

    requests: dict[str, int]
    responses: dict[str, int]
    resent: int

    @property
    def total(self) -> int:
        return sum(self.requests.values()) + sum(self.responses.values())


_RESP = re.compile(r"^\s+SIP (\d{3}) .*:\s+(\d+) Packets")
_REQ = re.compile(r"^\s+(\S+)\s+:\s+(\d+) Packets")


def parse_sip_stat(text: str) -> SipStat:
    req: dict[str, int] = {}
    resp: dict[str, int] = {}
    resent = 0
    section = ""
    for line in text.splitlines():
        if line.startswith("* SIP Status Codes"):
            section = "resp"
        elif line.startswith("* List of SIP Request methods"):
            section = "req"
        elif line.startswith("* "):
            section = ""
        elif line.startswith("Number of resent SIP messages:"):
            resent = int(line.split(":")[1])
        elif section == "resp" and (m := _RESP.match(line)):
            resp[m.group(1)] = resp.get(m.group(1), 0) + int(m.group(2))
        elif section == "req" and (m := _REQ.match(line)):
            req[m.group(1)] = req.get(m.group(1), 0) + int(m.group(2))
    return SipStat(req, resp, resent)


def tshark_sip_stat(path: Path, decode_as: Sequence[str] = (), timeout: float = 120) -> SipStat:
    argv = ["tshark", "-n", "-q", "-z", "sip,stat", "-r", str(path)]
    for d in decode_as:
        argv += ["-d", d]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if "SIP Statistics" not in r.stdout:
        raise PeerError(f"tshark sip,stat failed on {path}: {r.stderr[-500:]}")
    return parse_sip_stat(r.stdout)


def capture_span(path: Path) -> tuple[float, float]:
    """(first, last) packet time of a capture, as capinfos reads it."""
    r = subprocess.run(
        ["capinfos", "-a", "-e", "-S", "-T", "-r", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    cols = r.stdout.strip().split("\t")
    return float(cols[-2]), float(cols[-1])


def tcp_streams(path: Path) -> int:
    """Number of TCP connections in a capture (tshark's tcp.stream index)."""
    r = subprocess.run(
        ["tshark", "-n", "-r", str(path), "-Y", "tcp", "-T", "fields", "-e", "tcp.stream"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return len(set(r.stdout.split()))


def tcp_segment_profile(path: Path) -> tuple[int, int, int]:
    """(segments with payload, segments holding 2+ SIP messages, segments starting
    mid-message) of all TCP payloads, by looking at the bytes tshark extracts."""
    r = subprocess.run(
        ["tshark", "-n", "-r", str(path), "-Y", "tcp.len>0", "-T", "fields", "-e", "tcp.payload"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    start = re.compile(rb"^([A-Z]+ sip:\S+ SIP/2\.0|SIP/2\.0 \d{3} )")
    segs = [bytes.fromhex(x) for x in r.stdout.split() if x]
    multi = sum(1 for s in segs if len(re.findall(rb"\r\nCall-ID:", s)) > 1)
    mid = sum(1 for s in segs if not start.match(s))
    return len(segs), multi, mid


# ---------------------------------------------------------------- scenarios


@dataclass(frozen=True)
class Scenario:
    """One SIPp run: UAC and UAS scenario files (or built-in names), how to connect."""

    name: str
    uac: str
    uas: str
    calls: int = 20
    rate: int = 50
    transport: str = "udp"  # "udp" | "tcp"
    ipv6: bool = False
    proxy: bool = False
    proxy_auth: bool = False
    uac_args: tuple[str, ...] = ()
    uas_args: tuple[str, ...] = ()
    # {{name}} placeholders filled in the UAS XML (SIPp checks status codes at load
    # time, so a status line cannot come from a -key keyword).
    uas_vars: tuple[tuple[str, str], ...] = ()
    captures: tuple[str, ...] = ("tcpdump-lo",)
    pause_ms: int = 20
    uac_timeout: float = 40.0


@dataclass
class Run:
    """Everything a scenario run left behind."""

    scenario: Scenario
    workdir: Path
    ports: tuple[int, int, int, int]
    captures: dict[str, Path]
    uac: SippLog
    uas: SippLog
    proxy_log: str = ""
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def pcap(self) -> Path:
        return next(iter(self.captures.values()))


def auth_vars(code: int) -> tuple[tuple[str, str], ...]:
    """Template values for uas_auth.xml: a 401 or 407 challenge and the check of the retry."""
    if code == 401:
        header, reason = "WWW-Authenticate", "Unauthorized"
        check = f'<verifyauth assign_to="authvalid" username="{USER}" password="{PASSWORD}"/>'
        gate = '<nop test="authvalid" next="good"/>'
    else:
        header, reason = "Proxy-Authenticate", "Proxy Authentication Required"
        check = (
            f'<ereg regexp="username=&quot;{USER}&quot;" search_in="hdr" '
            'header="Proxy-Authorization:" check_it="true" assign_to="authuser"/>'
        )
        gate = '<nop next="good"><action><log message="[$authuser]"/></action></nop>'
    return (
        ("code", str(code)),
        ("reason", reason),
        ("auth_header", header),
        ("check", check),
        ("gate", gate),
    )


def _scenario_file(xml: str, variables: tuple[tuple[str, str], ...], wd: Path) -> Path:
    if not variables:
        return SCENARIOS / xml
    text = (SCENARIOS / xml).read_text()
    for key, value in variables:
        text = text.replace("{{" + key + "}}", value)
    out = wd / xml
    out.write_text(text)
    return out


def _media_port(block_media: int, role: str) -> int:
    """SIPp's RTP echo ports (-mp N binds N and N+2), kept out of the SIP port range."""
    return 20000 + (block_media - PORT_FIRST) * 10 + (0 if role == "uac" else 4)


def _sipp_argv(sc: Scenario, role: str, ports: tuple[int, ...], wd: Path) -> list[str]:
    uas_port, uac_port, proxy_port, media = ports
    host = "::1" if sc.ipv6 else "127.0.0.1"
    xml = sc.uac if role == "uac" else sc.uas
    argv = ["sipp", "-sn", xml]
    if xml.endswith(".xml"):
        argv = ["sipp", "-sf", str(_scenario_file(xml, sc.uas_vars if role == "uas" else (), wd))]
    argv += [
        "-i",
        host,
        "-p",
        str(uac_port if role == "uac" else uas_port),
        "-mp",
        str(_media_port(media, role)),
        "-t",
        "u1" if sc.transport == "udp" else "t1",
        "-m",
        str(sc.calls),
        "-nostdin",
        "-trace_shortmsg",
        "-shortmessage_file",
        str(wd / f"{role}_short.log"),
        "-trace_stat",
        "-stf",
        str(wd / f"{role}_stat.csv"),
        "-trace_err",
        "-error_file",
        str(wd / f"{role}_err.log"),
        "-trace_msg",
        "-message_file",
        str(wd / f"{role}_msg.log"),
    ]
    if role == "uac":
        target = proxy_port if sc.proxy else uas_port
        argv += [
            "-r",
            str(sc.rate),
            "-d",
            str(sc.pause_ms),
            "-au",
            USER,
            "-ap",
            PASSWORD,
            f"[{host}]:{target}" if sc.ipv6 else f"{host}:{target}",
        ]
        argv += list(sc.uac_args)
    else:
        argv += list(sc.uas_args)
    return argv


def _read_sipp(role: str, rc: int, wd: Path) -> SippLog:
    short = wd / f"{role}_short.log"
    stat = wd / f"{role}_stat.csv"
    if not short.exists() or not stat.exists():
        raise PeerError(
            f"SIPp {role} left no logs (rc={rc}): "
            f"{(wd / f'sipp-{role}.err').read_text(errors='replace')[-800:]}"
        )
    err = wd / f"{role}_err.log"
    return SippLog(
        role,
        rc,
        parse_stat_csv(stat),
        parse_shortmsg(short),
        err.read_text(errors="replace") if err.exists() else "",
    )


def render_kamailio_cfg(sc: Scenario, ports: tuple[int, ...], out: Path) -> Path:
    uas_port, _uac, proxy_port, _media = ports
    host = "[::1]" if sc.ipv6 else "127.0.0.1"
    text = KAMAILIO_CFG.read_text()
    for key, value in {
        "@LISTEN@": host,
        "@PORT@": str(proxy_port),
        "@MPATH@": KAMAILIO_MODULES,
        "@AUTH@": "1" if sc.proxy_auth else "0",
        "@UAS@": f"sip:{host}:{uas_port};transport={sc.transport}",
    }.items():
        text = text.replace(key, value)
    out.write_text(text)
    return out


@contextmanager
def kamailio(sc: Scenario, ports: tuple[int, ...], wd: Path) -> Iterator[Proc]:
    """Kamailio in the foreground (-DD -E), checked with -c first, stopped in teardown."""
    cfg = render_kamailio_cfg(sc, ports, wd / "kamailio.cfg")
    check = subprocess.run(
        ["kamailio", "-c", "-f", str(cfg)], capture_output=True, text=True, timeout=30, check=False
    )
    if check.returncode != 0:
        raise PeerError(f"kamailio -c failed: {check.stderr[-1500:]}")
    rundir = wd / "kamailio-run"
    rundir.mkdir(exist_ok=True)
    proc = Proc.start(
        "kamailio",
        [
            "kamailio",
            "-f",
            str(cfg),
            "-DD",
            "-E",
            "-m",
            "64",
            "-M",
            "8",
            "-Y",
            str(rundir),
            "-P",
            str(rundir / "k.pid"),
            "-w",
            str(rundir),
        ],
        wd,
    )
    try:
        wait_for(
            lambda: port_bound(ports[2], sc.transport, sc.ipv6) or proc.popen.poll() is not None,
            15,
            "kamailio to listen",
        )
        if proc.popen.poll() is not None:
            raise PeerError(f"kamailio exited: {proc.text()[-1500:]}")
        yield proc
    finally:
        proc.stop(signal.SIGTERM, 10)


def run_scenario(sc: Scenario, workdir: Path) -> Run:
    """Run one scenario with its captures; raise PeerError if a peer misbehaves."""
    wd = workdir / sc.name
    wd.mkdir(parents=True, exist_ok=True)
    ports = allocate_ports()
    bpf = " or ".join(f"port {p}" for p in ports[:3])
    caps = {
        tool: wd / f"{sc.name}.{tool}.{'pcapng' if tool == 'dumpcap' else 'pcap'}"
        for tool in sc.captures
    }
    proxy_log = ""
    with ExitStack() as stack:
        for tool, path in caps.items():
            stack.enter_context(capture(tool, path, bpf, wd))
        k = stack.enter_context(kamailio(sc, ports, wd)) if sc.proxy else None
        uas = Proc.start("sipp-uas", _sipp_argv(sc, "uas", ports, wd), wd)
        stack.callback(uas.stop, signal.SIGTERM, 5)
        wait_for(
            lambda: port_bound(ports[0], sc.transport, sc.ipv6) or uas.popen.poll() is not None,
            10,
            "SIPp UAS to listen",
        )
        uac = Proc.start("sipp-uac", _sipp_argv(sc, "uac", ports, wd), wd)
        uac_rc = uac.wait(sc.uac_timeout)
        try:
            uas_rc = uas.popen.wait(8)
        except subprocess.TimeoutExpired:
            uas_rc = uas.stop(signal.SIGINT, 5)
        if k is not None:
            proxy_log = k.text()
    return Run(
        sc, wd, ports, caps, _read_sipp("uac", uac_rc, wd), _read_sipp("uas", uas_rc, wd), proxy_log
    )


def decode_as(run: Run) -> list[str]:
    """tshark -d options so SIP is dissected on the run's ports whatever the heuristics do."""
    t = run.scenario.transport
    return [f"{t}.port=={p},sip" for p in run.ports[:3]]
