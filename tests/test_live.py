"""``sipflow live``: the session core on real captures and under a steady load (what it
holds stays bounded), the HEP collector, clear errors, live capture on lo during a SIPp
run and during a reference-B2BUA regen, and Kamailio siptrace sending HEP (loopback only;
every process has a deadline and is stopped in teardown)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from peers import harness
from peers.harness import Proc, Scenario, capture, run_scenario, wait_for
from peers.sipflow_cli import CORPUS, sipflow_executable

from sipflow.api import Options, analyze
from sipflow.engine.live import LiveSession
from sipflow.ingest.hep import encode_hep2, encode_hep3
from sipflow.ingest.live import (
    LINKTYPE_ETHERNET,
    LINKTYPE_RAW,
    LiveError,
    PcapWriter,
    parse_listen,
    parse_size,
)
from sipflow.ingest.pcap import open_capture
from sipflow.ingest.pcapwrite import _tcp, _udp
from sipflow.ingest.types import Endpoint, Transport
from sipflow.trace import CALL_FIELDS, call_to_dict

PCAPS = CORPUS / "pcaps"
KEY = ("call_ids", "caller", "callee", "request_uri", "outcome", "final_code", "ended_by", "hops")
ROOT = os.geteuid() == 0
# {{name}} values of the UAS scenarios (tests/peers/scenarios/uas_reject.xml)
UAS_VARS = {"reject": (("code", "404"), ("reason", "Not Found"))}


def _key(call: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(tuple(call[k]) if isinstance(call[k], list) else call[k] for k in KEY)


def _analyzed(path: Path) -> list[dict[str, Any]]:
    trace = analyze([path], Options(keep_messages=False, keep_records=False))
    return [call_to_dict(c) for c in trace.call_records]


def _corpus(name: str) -> Path:
    path = PCAPS / name
    if not path.exists():
        pytest.skip(f"{path} absent (../shared not on this machine)")
    return path


# ------------------------------------------------------------------------ options


def test_parse_size_and_listen() -> None:
    assert [parse_size(s) for s in ("100", "10k", "5M", "1G", "2mb")] == [
        100,
        10_000,
        5_000_000,
        10**9,
        2_000_000,
    ]
    assert parse_listen("127.0.0.1:9060") == ("127.0.0.1", 9060)
    assert parse_listen("[::1]:9061") == ("::1", 9061)
    assert parse_listen(":9062") == parse_listen("9062") == ("0.0.0.0", 9062)
    for bad in ("10X", "0", "-1", "M"):
        with pytest.raises(LiveError):
            parse_size(bad)
    for bad in ("host:", "1.2.3.4:70000", "x:y"):
        with pytest.raises(LiveError):
            parse_listen(bad)


def test_pcap_writer_rotates_and_every_file_reads(tmp_path: Path) -> None:
    frame = b"\x45" + bytes(99)
    w = PcapWriter(str(tmp_path / "out.pcap"), LINKTYPE_RAW, rotate=1000)
    for i in range(25):
        w.write(1_700_000_000_000_000_000 + i, frame)
    w.close()
    names = [p.name for p in w.files]
    # 24-byte header + 8 records of 16 + 100 bytes fit in 1000: files of 8, 8, 8, 1
    assert names == ["out.pcap", "out-1.pcap", "out-2.pcap", "out-3.pcap"]
    counts = []
    for p in w.files:
        assert p.stat().st_size <= 1000
        cap = open_capture(str(p), 0)
        counts.append(sum(len(c) for c in cap.chunks()))
        cap.close()
    assert counts == [8, 8, 8, 1] and w.frames == 25
    if shutil.which("capinfos"):  # the independent reader agrees
        r = subprocess.run(
            ["capinfos", "-c", "-M", str(w.files[0])], capture_output=True, text=True
        )
        assert r.stdout.split("Number of packets:")[1].split()[0] == "8", r.stdout


# ------------------------------------------------------------------------ the session core


def _replay(path: Path) -> tuple[list[dict[str, Any]], LiveSession]:
    """Feed every frame of a capture through LiveSession as if it arrived live."""
    got: list[dict[str, Any]] = []
    session = LiveSession(lambda call, _findings: got.append(call))
    cap = open_capture(str(path), 0)
    try:
        for chunk in cap.chunks():
            for i in range(len(chunk)):
                ts = int(chunk.ts[i])
                session.feed_frame(int(chunk.link_type[i]), chunk.data(i), ts)
                session.tick(ts)
    finally:
        cap.close()
    session.finish()
    return got, session


@pytest.mark.parametrize(
    "name",
    [
        "goffinet__sip-2phones-B2BUA-Asterisk.pcapng",  # B2BUA, auth, re-INVITEs, RTP
        "goffinet__voip-extension2downata.pcap",  # serial forking, CANCEL, retransmissions
        "heplify__sip_ipv4_tcp.pcap",  # SIP over TCP
        "goffinet__private-test-sip.pcapng",  # IPv4 fragments, 407, 483
        "heplify__erspan_sip_ipv4_udp.pcapng",  # GRE/ERSPAN tunnels
    ],
)
def test_session_replay_finds_the_calls_analyze_finds(name: str) -> None:
    path = _corpus(name)
    live, session = _replay(path)
    offline = _analyzed(path)
    assert sorted(map(_key, live)) == sorted(map(_key, offline)) and offline
    by_key = {_key(c): c for c in offline}
    for call in live:  # the same JSON shape as analyze --format json calls[]
        assert set(CALL_FIELDS) | {"channels", "media"} == set(call)
        assert call["messages"] == by_key[_key(call)]["messages"]
    assert session.rows == {}  # every call released


def test_session_memory_is_released_on_a_long_capture() -> None:
    path = _corpus("goffinet__branch-scenario-sipp.pcapng")  # ~9000 SIP messages
    live, session = _replay(path)
    assert sorted(map(_key, live)) == sorted(map(_key, _analyzed(path)))
    assert session.builder.open_calls() == 0 and len(session.done) <= 50
    assert len(session._recent) < 1000 and not session._heap


# A steady call load made here, so a long run costs seconds: SIPp's built-in uac/uas flow
# (INVITE, 100, 180, 200, ACK, BYE after the hold, 200), every call with its own Call-ID,
# tags and branches, as Ethernet frames on the wire at the times they would be captured.
NS = 1_000_000_000
MS = 1_000_000
ETH = b"\0" * 12 + b"\x08\x00"
UAS = Endpoint("127.0.0.1", 5060)


def _sipp_call(n: int, at: int, transport: Transport) -> list[tuple[int, bool, bytes]]:
    """(time, sent by the caller, message) of one call; the callee answers at once."""
    uac = f"127.0.0.1:{20000 + n}"
    head = f"From: <sip:{n}@127.0.0.1>;tag={n}a\r\nCall-ID: {n}-soak@127.0.0.1\r\n"
    to, tt = "To: <sip:service@127.0.0.1:5060>", f";tag={n}b"

    def req(method: str, cseq: int, branch: str, tag: str = "") -> bytes:
        return (
            f"{method} sip:service@127.0.0.1:5060 SIP/2.0\r\n"
            f"Via: SIP/2.0/{transport.value} {uac};branch=z9hG4bK{n}{branch}\r\n{head}"
            f"{to}{tag}\r\nCSeq: {cseq} {method}\r\nContact: <sip:{n}@{uac}>\r\n"
            f"Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        ).encode()

    def resp(status: str, method: str, cseq: int, branch: str, tag: str = tt) -> bytes:
        return (
            f"SIP/2.0 {status}\r\nVia: SIP/2.0/{transport.value} {uac};branch=z9hG4bK{n}{branch}"
            f"\r\n{head}{to}{tag}\r\nCSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n"
        ).encode()

    return [
        (at, True, req("INVITE", 1, "i")),
        (at + 1 * MS, False, resp("100 Trying", "INVITE", 1, "i", "")),
        (at + 2 * MS, False, resp("180 Ringing", "INVITE", 1, "i")),
        (at + 3 * MS, False, resp("200 OK", "INVITE", 1, "i")),
        (at + 4 * MS, True, req("ACK", 1, "a", tt)),
        (at + 1000 * MS, True, req("BYE", 2, "b", tt)),
        (at + 1001 * MS, False, resp("200 OK", "BYE", 2, "b")),
    ]


class _Load:
    """Feeds ``_sipp_call`` calls to a session, ticking every 250 ms as ``run_live`` does;
    each TCP call has its own connection (a new caller port), never closed."""

    def __init__(self, transport: Transport, retain: int = 50) -> None:
        self.transport = transport
        self.calls: list[dict[str, Any]] = []
        self.session = LiveSession(lambda call, _f: self.calls.append(call), retain)
        self.now = 1_700_000_000 * NS
        self.pending: list[tuple[int, int, bool, bytes]] = []
        self.seq: dict[tuple[int, bool], int] = {}

    def frame(self, n: int, up: bool, payload: bytes) -> bytes:
        uac = Endpoint("127.0.0.1", 20000 + n)
        src, dst = (uac, UAS) if up else (UAS, uac)
        if self.transport is Transport.UDP:
            return ETH + _udp(src, dst, payload)
        seq = self.seq.get((n, up), 1000)
        self.seq[(n, up)] = seq + len(payload)
        return ETH + _tcp(src, dst, seq, 0, payload)

    def run(self, calls: range, gap: int, until: int) -> Iterator[int]:
        """Start ``calls`` every ``gap`` ns; yield the time every 10 s until ``until`` ns."""
        start, tick = self.now, 0
        for n in calls:
            self.pending += [
                (t, n, up, m)
                for t, up, m in _sipp_call(n, start + (n - calls[0]) * gap, self.transport)
            ]
        self.pending.sort(key=lambda p: p[0])
        i = 0
        while self.now < start + until:
            while i < len(self.pending) and self.pending[i][0] <= self.now:
                t, n, up, m = self.pending[i]
                self.session.feed_frame(LINKTYPE_ETHERNET, self.frame(n, up, m), t)
                i += 1
            self.session.tick(self.now)
            if tick % 40 == 0:
                yield self.now - start
            tick += 1
            self.now += NS // 4
        self.pending = self.pending[i:]


def test_session_holds_open_calls_only_under_a_steady_load() -> None:
    """2,000 calls at 20 calls/s over UDP (100 s): the transaction timer heap, the call
    table, the re-order and duplicate windows hold what is open, not what went by. Without
    pruning, Timer C (3 min) entries of INVITEs long answered pile up in the timer heap."""
    load = _Load(Transport.UDP)
    s = load.session
    tracker = s.builder._tracker
    for _ in load.run(range(2000), NS // 20, 140 * NS):
        assert tracker.held_timers() <= 2 * tracker.open_count() + 64
        assert len(s.rows) == s.builder.open_calls() <= 20 * 40  # ~32 s of calls (Timer K, M)
        assert len(s._recent) <= 64 and len(s._heap) <= 64 and len(s.done) <= 50
        assert len(s.findings) <= 1000
    assert len(load.calls) == 2000 - s.builder.open_calls()
    s.finish()
    assert len(load.calls) == 2000 and {c["outcome"] for c in load.calls} == {"answered"}
    assert s.rows == {} and tracker.open_count() == 0 and tracker.held_timers() == 0


def test_session_releases_framers_of_idle_tcp_connections() -> None:
    """800 calls over TCP, one a second, each on its own connection that never closes: the
    stream framers of connections idle longer than the TCP reassembler keeps them are
    flushed, so at most the last 10 minutes' connections (two directions each) are held."""
    load = _Load(Transport.TCP)
    s = load.session
    idle = s.pipe.tcp.idle_timeout_ns
    most = 0
    for _ in load.run(range(800), NS, 800 * NS):
        assert len(s.framers) <= 2 * (idle // NS + 2)
        most = max(most, len(s.framers))
    assert most > 2 * (idle // NS) - 10  # the window was reached: framers were pruned
    list(load.run(range(0), NS, idle + 5 * NS))  # the wire goes quiet
    assert s.framers == {} and s._last_dg == {} and s.rows == {}
    assert len(load.calls) == 800 and {c["outcome"] for c in load.calls} == {"answered"}


def test_retain_keeps_that_many_finished_rows() -> None:
    """``--retain 3``: the table keeps the three calls that finished last."""
    load = _Load(Transport.UDP, retain=3)
    list(load.run(range(20), NS // 10, 60 * NS))
    assert len(load.calls) == 20
    last = [c["call_ids"][0] for c in load.calls[-3:]]
    assert [r.call_id for r in load.session.done] == last
    assert {r.outcome for r in load.session.done} == {"answered"}


def test_an_invite_no_call_can_start_from_leaves_no_row() -> None:
    """An INVITE without Via cannot join a transaction (sip.unmatchable): the builder
    starts no call, so the table must not hold a row for it forever."""
    got: list[dict[str, Any]] = []
    s = LiveSession(lambda call, _f: got.append(call))
    t = 1_700_000_000 * NS
    invite = _sipp_call(1, t, Transport.UDP)[0][2]
    bad = invite.replace(b"Via: SIP/2.0/UDP 127.0.0.1:20001;branch=z9hG4bK1i\r\n", b"")
    assert b"Via" not in bad
    s.feed_frame(LINKTYPE_ETHERNET, ETH + _udp(Endpoint("127.0.0.1", 20001), UAS, bad), t)
    s.tick(t + NS)
    assert s.stats.messages == 1 and s.rows == {} and s.builder.open_calls() == 0
    assert "sip.unmatchable" in {f.code for f in s.findings}


# ------------------------------------------------------------------------ processes


def _free_port() -> int:
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind(("127.0.0.1", 0))
            port = int(u.getsockname()[1])
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
            try:
                t.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    raise RuntimeError("no free port")


class Live:
    """`sipflow live ... --json-lines` as a child process, ready when it says so."""

    def __init__(self, args: list[str], wd: Path, name: str = "sipflow-live") -> None:
        argv = [*sipflow_executable(), "live", "--json-lines", "--duration", "120", *args]
        self.proc = Proc.start(name, argv, wd)
        wait_for(
            lambda: (
                "sipflow live: " in self.proc.err.read_text() or self.proc.popen.poll() is not None
            ),
            30,
            "sipflow live to listen",
        )
        assert self.proc.popen.poll() is None, self.proc.text()

    def stop(self) -> list[dict[str, Any]]:
        rc = self.proc.stop(signal.SIGINT, 20)
        text = self.proc.err.read_text()
        assert rc == 0 and "Traceback" not in text, text
        return [json.loads(line) for line in self.proc.out.read_text().splitlines()]

    def kill(self) -> None:
        self.proc.kill()


@pytest.fixture
def live_proc(tmp_path: Path) -> Iterator[list[Live]]:
    started: list[Live] = []
    yield started
    for p in started:
        p.kill()


def test_hep_collector_udp_and_tcp_gives_the_calls_of_the_capture(
    tmp_path: Path, live_proc: list[Live]
) -> None:
    """Every message of a corpus capture sent as HEP (v3 over UDP and TCP, v2 over UDP) to
    `sipflow live --hep-listen`: the same calls come out, and the file it wrote (HEP as
    UDP to the collector) analyses to the same calls again."""
    path = _corpus("goffinet__sip-2phones-B2BUA-Asterisk.pcapng")
    trace = analyze([path], Options(keep_messages=True, keep_records=False))
    port = _free_port()
    out = tmp_path / "hep.pcap"
    live = Live(["--hep-listen", f"127.0.0.1:{port}", "--write", str(out)], tmp_path)
    live_proc.append(live)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tcp = socket.create_connection(("127.0.0.1", port), timeout=5)
    for n, msg in enumerate(trace.message_list):
        o = msg.origin
        assert o is not None and o.src is not None and o.dst is not None
        proto = 6 if o.transport is Transport.TCP else 17
        if n % 3 == 0:
            tcp.sendall(encode_hep3(o.src, o.dst, msg.raw, msg.ts, ip_proto=proto))
        elif n % 3 == 1:
            udp.sendto(
                encode_hep3(o.src, o.dst, msg.raw, msg.ts, ip_proto=proto), ("127.0.0.1", port)
            )
        else:
            udp.sendto(
                encode_hep2(o.src, o.dst, msg.raw, msg.ts, ip_proto=proto), ("127.0.0.1", port)
            )
        time.sleep(0.001)
    udp.sendto(b"HEP3\x00\x07garbage", ("127.0.0.1", port))  # malformed: counted, not fatal
    tcp.close()
    udp.close()
    time.sleep(0.5)
    calls = live.stop()
    offline = _analyzed(path)
    assert sorted(map(_key, calls)) == sorted(map(_key, offline)) and offline
    assert sorted(map(_key, _analyzed(out))) == sorted(map(_key, offline))
    assert "hep_malformed=1" in live.proc.err.read_text()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["-i", "nosuch0"], "no such interface: nosuch0"),
        (["-i", "lo", "-f", "udp prt 5060"], "bad capture filter"),
        ([], "nothing to listen to"),
        (["-i", "lo", "--rotate", "12Q"], "bad size"),
    ],
)
def test_clear_errors(args: list[str], needle: str, tmp_path: Path) -> None:
    r = subprocess.run(
        [*sipflow_executable(), "live", *args, "--duration", "2"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert r.returncode == 2 and needle in r.stderr, r.stderr
    assert "Traceback" not in r.stderr + r.stdout


def test_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as busy:
        busy.bind(("127.0.0.1", 0))
        port = busy.getsockname()[1]
        r = subprocess.run(
            [*sipflow_executable(), "live", "--hep-listen", f"127.0.0.1:{port}", "--duration", "2"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert r.returncode == 2 and "address in use" in r.stderr and "Traceback" not in r.stderr


def test_not_root_is_a_clear_error(tmp_path: Path) -> None:
    argv = [*sipflow_executable(), "live", "-i", "lo", "--duration", "2"]
    if ROOT:
        if shutil.which("setpriv") is None:
            pytest.skip("setpriv not installed: cannot drop root for this check")
        # Drop every capability (CAP_NET_RAW among them) but keep the user: another user
        # may not reach the checkout (a clone in a 0700 mktemp directory).
        drop = ["--inh-caps=-all", "--ambient-caps=-all", "--bounding-set=-all"]
        argv = ["setpriv", *drop, *argv]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd="/")
    assert r.returncode == 2 and "needs root or the CAP_NET_RAW" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


# ------------------------------------------------------------------------ real peers


def _need_peers(*tools: str) -> None:
    if not ROOT:
        pytest.skip("live capture and tcpdump on lo need root")
    missing = harness.missing_tools(tools)
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)}")


@pytest.mark.peers
@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_live_capture_during_sipp_run(
    transport: str, tmp_path: Path, live_proc: list[Live]
) -> None:
    """Live on lo while SIPp runs answered, rejected and cancelled calls: the calls it
    prints are those `sipflow analyze` finds in the file it wrote and in tcpdump's."""
    _need_peers("sipp", "tcpdump")
    out = tmp_path / "live.pcap"
    bpf = f"portrange {harness.PORT_FIRST}-{harness.PORT_LAST}"
    live = Live(["-i", "lo", "-f", bpf, "--write", str(out)], tmp_path)
    live_proc.append(live)
    runs = [
        run_scenario(
            Scenario(
                f"live_{transport}_{kind}",
                f"uac_{kind}.xml",
                f"uas_{kind}.xml",
                calls=10,
                rate=20,
                transport=transport,
                uas_vars=UAS_VARS.get(kind, ()),
            ),
            tmp_path,
        )
        for kind in ("answer", "reject", "cancel")
    ]
    time.sleep(1.0)
    calls = live.stop()
    written = _analyzed(out)
    tcpdump = [c for r in runs for c in _analyzed(r.pcap)]
    assert len(tcpdump) == 30
    assert sorted(map(_key, calls)) == sorted(map(_key, written)) == sorted(map(_key, tcpdump))
    outcomes = {c["outcome"] for c in calls}
    assert outcomes == {"answered", "rejected", "cancelled"}


@pytest.mark.peers
def test_live_capture_during_b2bua_regen(
    tmp_path: Path, live_proc: list[Live], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Live on lo while the reference B2BUA re-enacts mixed traffic (`sipflow regen
    traffic`: answered, busy, not found, cancelled while ringing; caller and callee legs):
    the calls it prints are those `sipflow analyze` finds in the file it wrote, in the
    B2BUA's own pcap of the run and in tcpdump's capture of the same run."""
    _need_peers("tcpdump")
    from sipflow.b2bua import scenarios

    ports = harness.allocate_ports()  # the run's UAS, B2BUA, B2BUA TLS and UAC ports
    handed = iter(ports)
    monkeypatch.setattr(scenarios, "_free_port", lambda *_a: next(handed))
    bpf = " or ".join(f"port {p}" for p in ports)
    out = tmp_path / "live.pcap"
    live = Live(["-i", "lo", "-f", bpf, "--write", str(out)], tmp_path)
    live_proc.append(live)
    dump = tmp_path / "tcpdump.pcap"
    with capture("tcpdump-lo", dump, bpf, tmp_path):
        result = scenarios.regen("traffic", tmp_path / "regen.pcap", seed=5, calls=16, rate=10)
    time.sleep(0.5)
    calls = live.stop()
    assert result.calls == 16 and sum(result.outcomes.values()) == 16, result.outcomes
    regen_pcap = _analyzed(result.pcap)
    assert len(regen_pcap) == 2 * result.calls  # one per leg (its own Call-ID)
    assert sorted(map(_key, calls)) == sorted(map(_key, _analyzed(out)))
    assert sorted(map(_key, calls)) == sorted(map(_key, regen_pcap))
    assert sorted(map(_key, calls)) == sorted(map(_key, _analyzed(dump)))
    assert len({c["outcome"] for c in calls}) >= 3  # the traffic mix, not only answers


HEP_CFG = """loadmodule "siptrace.so"
modparam("siptrace", "duplicate_uri", "sip:127.0.0.1:{port}")
modparam("siptrace", "hep_mode_on", 1)
modparam("siptrace", "hep_version", {version})
modparam("siptrace", "trace_to_database", 0)
modparam("siptrace", "trace_on", 1)
"""


def _kamailio_hep_template(wd: Path, port: int, version: int) -> Path:
    """tests/peers/kamailio/proxy.cfg.in plus siptrace in HEP mode, tracing every
    transaction (requests in and out, replies in and out)."""
    text = harness.KAMAILIO_CFG.read_text()
    anchor = 'loadmodule "auth.so"\n'
    assert anchor in text and "request_route {\n" in text
    text = text.replace(anchor, anchor + HEP_CFG.format(port=port, version=version))
    text = text.replace("request_route {\n", 'request_route {\n    sip_trace_mode("t");\n', 1)
    out = wd / f"kamailio-hep{version}.cfg.in"
    out.write_text(text)
    return out


@pytest.mark.peers
@pytest.mark.parametrize("version", [3, 2])
def test_kamailio_siptrace_hep_to_live_collector(
    version: int, tmp_path: Path, live_proc: list[Live], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Kamailio (siptrace, HEP mode) proxies SIPp calls and sends HEP to `sipflow live
    --hep-listen`: the calls equal those of a tcpdump capture of the SIP ports; a tcpdump
    capture of the HEP packets analyses to the same calls, with the inner addresses."""
    _need_peers("sipp", "tcpdump", "kamailio")
    port = _free_port()
    monkeypatch.setattr(harness, "KAMAILIO_CFG", _kamailio_hep_template(tmp_path, port, version))
    live = Live(["--hep-listen", f"127.0.0.1:{port}"], tmp_path)
    live_proc.append(live)
    hep_pcap = tmp_path / "hep.pcap"
    with capture("tcpdump-lo", hep_pcap, f"udp port {port}", tmp_path):
        runs = [
            run_scenario(
                Scenario(
                    f"khep{version}_{kind}",
                    f"uac_{kind}.xml",
                    f"uas_{kind}.xml",
                    calls=8,
                    rate=20,
                    proxy=True,
                    uas_vars=UAS_VARS.get(kind, ()),
                ),
                tmp_path,
            )
            for kind in ("answer", "reject")
        ]
        time.sleep(1.0)
    calls = live.stop()
    tcpdump = [c for r in runs for c in _analyzed(r.pcap)]
    assert len(tcpdump) == 16
    assert sorted(map(_key, calls)) == sorted(map(_key, tcpdump))
    # HEP inside a capture: decapsulated, inner SIP with the inner 5-tuple.
    in_pcap = analyze([hep_pcap], Options(keep_messages=True, keep_records=False))
    assert sorted(_key(call_to_dict(c)) for c in in_pcap.call_records) == sorted(map(_key, tcpdump))
    inner = {(m.origin.src, m.origin.dst) for m in in_pcap.message_list if m.origin}
    uas, uac, proxy, _ = runs[0].ports
    assert (Endpoint("127.0.0.1", uac), Endpoint("127.0.0.1", proxy)) in inner
    assert (Endpoint("127.0.0.1", proxy), Endpoint("127.0.0.1", uas)) in inner
    assert all(port not in (s.port, d.port) for s, d in inner if s and d)
