"""Make the load capture for the benchmark with real SIPp, captured by tcpdump on loopback.

How this works: a SIPp 3.6 UAS (scenarios/uas_load.xml) and UAC (scenarios/uac_load.xml) run
on 127.0.0.1 while `tcpdump -i lo -w` records their UDP traffic. The caller takes each call's
outcome from scenarios/outcomes.csv (46 of 50 answered, 2 busy/486, 2 not found/404); answered
calls carry G.711 A-law RTP both ways (play_pcap_audio of the first MEDIA_PACKETS packets of
SIPp's g711a.pcap, 30 ms apart) and end with a BYE from the callee after PAUSE_MS. So the shape
of the capture follows from the parameters alone; `expected_shape()` computes it and the
generator checks the capture against it (and tcpdump's kernel drop count).

Outputs in benchmarks/out/ (git-ignored): load.pcap, load.pcapng (same packets, by editcap) and
load.json (parameters, expected and measured counts, generation time). A capture is reused while
load.json says it was made from the same parameters and scenario files; `--force` remakes it.

    .venv/bin/python benchmarks/gen_load.py [--calls N] [--rate CPS] [--force]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCENARIOS = HERE / "scenarios"
OUT = HERE / "out"
SIPP_MEDIA = Path("/usr/share/sip-tester/g711a.pcap")  # shipped by Debian's sip-tester
MEDIA_NAME = "media_g711a.pcap"  # the name the scenarios' play_pcap_audio uses
UAS_PORT, UAC_PORT = 15060, 15061  # off 5060 so that other SIP tests on this host do not mix in
UAS_MEDIA, UAC_MEDIA = 30000, 40000  # [auto_media_port] walks mp .. mp+9999
BPF = f"udp and (port {UAS_PORT} or port {UAC_PORT} or portrange {UAS_MEDIA}-{UAC_MEDIA + 9999})"
OUTCOME_MESSAGES = {  # SIP messages on the wire per call, by outcome (no retransmissions)
    "answer": ({"INVITE": 1, "ACK": 1, "BYE": 1}, {"100": 1, "180": 1, "200": 2}),
    "busy": ({"INVITE": 1, "ACK": 1}, {"100": 1, "486": 1}),
    "notfound": ({"INVITE": 1, "ACK": 1}, {"100": 1, "404": 1}),
}


class GenerationError(RuntimeError):
    """The capture could not be made or does not have the expected shape."""


@dataclass(frozen=True)
class LoadParams:
    calls: int = 2500
    rate: int = 50  # calls per second started by the UAC
    media_packets: int = 64  # RTP packets per stream (30 ms each)
    pause_ms: int = 2500  # UAS: from ACK to BYE; outlasts the media_packets * 30 ms of audio


@dataclass(frozen=True)
class Shape:
    """What the capture must hold, derived from the parameters and outcomes.csv."""

    answered: int
    busy: int
    notfound: int
    sip_requests: dict[str, int]
    sip_responses: dict[str, int]
    sip_messages: int
    rtp_packets: int
    rtp_streams: int
    packets: int


def read_outcomes(path: Path = SCENARIOS / "outcomes.csv") -> list[str]:
    """Field 0 of each data row of the SIPp injection file (SEQUENTIAL, one row per call)."""
    rows = path.read_text().splitlines()[1:]
    return [r.split(";")[0] for r in rows if r and not r.startswith("#")]


def expected_shape(params: LoadParams) -> Shape:
    outcomes = read_outcomes()
    counts = {k: 0 for k in OUTCOME_MESSAGES}
    for i in range(params.calls):  # SEQUENTIAL: call n takes row (n - 1) mod rows
        counts[outcomes[i % len(outcomes)]] += 1
    requests: dict[str, int] = {}
    responses: dict[str, int] = {}
    for outcome, n in counts.items():
        reqs, resps = OUTCOME_MESSAGES[outcome]
        for k, v in reqs.items():
            requests[k] = requests.get(k, 0) + v * n
        for k, v in resps.items():
            responses[k] = responses.get(k, 0) + v * n
    sip = sum(requests.values()) + sum(responses.values())
    streams = 2 * counts["answer"]
    rtp = streams * params.media_packets
    return Shape(
        counts["answer"],
        counts["busy"],
        counts["notfound"],
        requests,
        responses,
        sip,
        rtp,
        streams,
        sip + rtp,
    )


def fingerprint(params: LoadParams) -> str:
    """Hash of everything that decides the capture's content: parameters and scenario files."""
    h = hashlib.sha256(json.dumps(asdict(params), sort_keys=True).encode())
    for f in sorted(SCENARIOS.iterdir()):
        h.update(f.name.encode() + f.read_bytes())
    h.update(BPF.encode())
    return h.hexdigest()[:16]


def require_tools(*names: str) -> None:
    missing = [n for n in names if shutil.which(n) is None]
    if missing:
        raise GenerationError(f"missing tools: {' '.join(missing)} (run `make deb`)")


def make_media(dest: Path, packets: int) -> None:
    """First `packets` RTP packets of SIPp's g711a.pcap, or the same made with scapy."""
    if SIPP_MEDIA.exists():
        run(["editcap", "-r", str(SIPP_MEDIA), str(dest), f"1-{packets}"])
        return
    from scapy.all import IP, UDP, Ether, Raw, wrpcap  # type: ignore[attr-defined]

    frames = []
    for i in range(packets):  # RFC 3550 §5.1 header: V=2, PT=8 (PCMA), seq, ts, SSRC
        rtp = bytes([0x80, 8]) + i.to_bytes(2, "big") + (i * 240).to_bytes(4, "big")
        rtp += (0x5EED0711).to_bytes(4, "big") + bytes([0xD5]) * 240
        pkt = Ether() / IP(src="127.0.0.1", dst="127.0.0.1") / UDP(sport=6000, dport=6002)
        pkt = pkt / Raw(rtp)
        pkt.time = 1_700_000_000 + i * 0.03
        frames.append(pkt)
    wrpcap(str(dest), frames)


def run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise GenerationError(f"{cmd[0]} failed ({res.returncode}): {res.stderr.strip()[-500:]}")
    return res


def count_packets(path: Path) -> int:
    out = run(["capinfos", "-M", "-c", "-T", str(path)]).stdout.splitlines()[-1]
    return int(out.split("\t")[1])


def start_tcpdump(dest: Path, log: Path) -> subprocess.Popen[bytes]:
    cmd = ["tcpdump", "-i", "lo", "-n", "-U", "-B", "32768", "-w", str(dest), BPF]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log.open("wb"))
    deadline = time.monotonic() + 10
    while "listening on" not in log.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise GenerationError(f"tcpdump did not start: {log.read_text(errors='replace')}")
        time.sleep(0.05)
    return proc


def stop_tcpdump(proc: subprocess.Popen[bytes], log: Path) -> tuple[int, int]:
    """SIGINT tcpdump (it flushes and prints its counters); return (captured, dropped)."""
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=30)
    text = log.read_text(errors="replace")
    captured = re.search(r"(\d+) packets? captured", text)
    dropped = re.search(r"(\d+) packets? dropped by kernel", text)
    if not captured or not dropped:
        raise GenerationError(f"tcpdump gave no counters: {text}")
    return int(captured.group(1)), int(dropped.group(1))


def sipp_cmd(side: str, params: LoadParams, timeout_s: int) -> list[str]:
    common = ["-i", "127.0.0.1", "-m", str(params.calls), "-nostdin", "-timeout", f"{timeout_s}s"]
    common += ["-timeout_error", "-trace_err", "-trace_screen"]
    if side == "uas":
        return [
            "sipp",
            "-sf",
            "uas_load.xml",
            "-p",
            str(UAS_PORT),
            "-mp",
            str(UAS_MEDIA),
            "-d",
            str(params.pause_ms),
            *common,
        ]
    return [
        "sipp",
        "-sf",
        "uac_load.xml",
        "-inf",
        "outcomes.csv",
        "-p",
        str(UAC_PORT),
        "-mp",
        str(UAC_MEDIA),
        "-r",
        str(params.rate),
        *common,
        f"127.0.0.1:{UAS_PORT}",
    ]


def run_sipp(work: Path, params: LoadParams) -> float:
    """Run UAS then UAC to completion in `work`; return the UAC's wall time in seconds."""
    timeout_s = params.calls // params.rate + 60
    logs = {s: (work / f"{s}.out").open("wb") for s in ("uas", "uac")}
    uas = subprocess.Popen(
        sipp_cmd("uas", params, timeout_s), cwd=work, stdout=logs["uas"], stderr=subprocess.STDOUT
    )
    try:
        time.sleep(0.5)  # let the UAS bind its port before the first INVITE
        t0 = time.monotonic()
        uac = subprocess.run(
            sipp_cmd("uac", params, timeout_s),
            cwd=work,
            stdout=logs["uac"],
            stderr=subprocess.STDOUT,
            timeout=timeout_s + 30,
            check=False,
        )
        elapsed = time.monotonic() - t0
        uas_rc = uas.wait(timeout=30)
    finally:
        if uas.poll() is None:
            uas.kill()
            uas.wait()
    for side, rc in (("uac", uac.returncode), ("uas", uas_rc)):
        if rc != 0:
            tail = (work / f"{side}.out").read_text(errors="replace")[-800:]
            raise GenerationError(f"SIPp {side} exited {rc} (logs in {work}):\n{tail}")
    return elapsed


def generate(params: LoadParams, out: Path = OUT) -> dict[str, object]:
    require_tools("sipp", "tcpdump", "editcap", "capinfos")
    work = out / "sipp"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    for f in SCENARIOS.iterdir():
        shutil.copy(f, work / f.name)  # play_pcap_audio looks next to the scenario
    make_media(work / MEDIA_NAME, params.media_packets)
    partial = out / "load.partial.pcap"
    tcpdump_log = work / "tcpdump.log"
    t0 = time.monotonic()
    tcpdump = start_tcpdump(partial, tcpdump_log)
    try:
        sipp_s = run_sipp(work, params)
        # libpcap hands over a TPACKET_V3 block when it fills or after its 1 s timeout;
        # SIGINT before that loses the last, partly filled block.
        time.sleep(2.0)
    finally:
        captured, dropped = stop_tcpdump(tcpdump, tcpdump_log)
    shape = expected_shape(params)
    packets = count_packets(partial)
    meta: dict[str, object] = {
        "fingerprint": fingerprint(params),
        "params": asdict(params),
        "expected": asdict(shape),
        "packets": packets,
        "tcpdump": {"captured": captured, "dropped_by_kernel": dropped, "filter": BPF},
        "sipp_seconds": round(sipp_s, 1),
        "generation_seconds": round(time.monotonic() - t0, 1),
        "tools": {
            "sipp": tool_version(["sipp", "-v"]),
            "tcpdump": tool_version(["tcpdump", "--version"]),
        },
    }
    if dropped:
        raise GenerationError(f"tcpdump dropped {dropped} packets; capture not kept: {meta}")
    if packets != shape.packets:
        print(
            f"warning: {packets} packets, the scenario shape gives {shape.packets} "
            "(retransmissions or lost media under load?)",
            file=sys.stderr,
        )
    partial.rename(out / "load.pcap")
    run(["editcap", "-F", "pcapng", str(out / "load.pcap"), str(out / "load.pcapng")])
    (out / "load.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def tool_version(cmd: list[str]) -> str:
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    lines = [x.strip() for x in (res.stdout + res.stderr).splitlines() if x.strip()]
    return lines[0] if lines else "?"


def ensure_capture(params: LoadParams | None = None, force: bool = False) -> Path:
    """Path to out/load.pcap, made first when missing or made from other parameters."""
    params = params or LoadParams()
    meta_path, pcap = OUT / "load.json", OUT / "load.pcap"
    if not force and pcap.exists() and meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if meta.get("fingerprint") == fingerprint(params):
            return pcap
    OUT.mkdir(exist_ok=True)
    print(f"generating {pcap} with SIPp ({params.calls} calls at {params.rate}/s) ...", flush=True)
    meta = generate(params)
    print(f"  {meta['packets']} packets in {meta['generation_seconds']} s", flush=True)
    return pcap


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    defaults = LoadParams()
    ap.add_argument("--calls", type=int, default=defaults.calls)
    ap.add_argument("--rate", type=int, default=defaults.rate)
    ap.add_argument("--media-packets", type=int, default=defaults.media_packets)
    ap.add_argument("--pause-ms", type=int, default=defaults.pause_ms)
    ap.add_argument("--force", action="store_true", help="remake even when cached")
    args = ap.parse_args(argv)
    params = LoadParams(args.calls, args.rate, args.media_packets, args.pause_ms)
    if os.geteuid() != 0:
        print("note: SIPp's play_pcap_audio and tcpdump need root", file=sys.stderr)
    try:
        pcap = ensure_capture(params, force=args.force)
    except GenerationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(pcap)
    print((OUT / "load.json").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
