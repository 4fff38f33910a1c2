"""A regen run's real wire: tcpdump on lo, and the B2BUA's TLS key log beside it.

How this works: the B2BUA's pcap holds what the B2BUA *saw* (TLS legs as cleartext SIP
over TCP). For a scenario with a TLS leg, :class:`WireEvidence` also records what went
*over the wire*: once the run's ports are chosen, :meth:`WireEvidence.start` runs
``tcpdump -i lo`` filtered to those ports into ``out.wire.pcap`` and waits for it to say
it is listening; leaving the ``with`` block stops it (SIGTERM, after a short drain). The
B2BUA's ``ssl.SSLContext.keylog_filename`` points at ``out.keys.log`` (NSS key log
format), so ``sipflow analyze out.wire.pcap --tls-keylog out.keys.log`` decrypts the
real records. Without tcpdump or the right to capture on lo, no wire pcap is written and
:attr:`WireEvidence.note` says why; the key log is still written.
"""

from __future__ import annotations

import os
import select
import shutil
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType

READY_TIMEOUT_S = 5.0
"""How long tcpdump may take to print ``listening on lo``."""
DRAIN_S = 0.2
"""Pause before stopping tcpdump, so the last segments leave the kernel buffer."""


class WireEvidence:
    """``out.keys.log`` and ``out.wire.pcap`` of one regen run (a context manager)."""

    def __init__(self, out: Path, enabled: bool, iface: str = "lo") -> None:
        self.keylog: Path | None = out.with_suffix(".keys.log") if enabled else None
        """Where the B2BUA's TLS contexts write their secrets (NSS key log)."""
        self.pcap: Path | None = None
        """The wire capture, once tcpdump runs."""
        self.note: str | None = None
        """Why there is no wire capture (tcpdump absent, not allowed to capture, ...)."""
        self._target = out.with_suffix(".wire.pcap") if enabled else None
        self._iface = iface
        self._proc: subprocess.Popen[bytes] | None = None
        if self.keylog is not None:
            self.keylog.unlink(missing_ok=True)  # Python appends: one run, one key log
            self._target_unlink()

    def _target_unlink(self) -> None:
        if self._target is not None:
            self._target.unlink(missing_ok=True)

    def start(self, ports: Iterable[int], ranges: Iterable[tuple[int, int]] = ()) -> None:
        """Run tcpdump on the run's ports and port ranges (anchored media: the RTP/RTCP
        pairs); on failure set :attr:`note` and carry on."""
        if self._target is None:
            return
        tcpdump = shutil.which("tcpdump")
        if tcpdump is None:
            self.note = "tcpdump is not installed"
            return
        terms = [f"port {p}" for p in sorted(set(ports))]
        terms += [f"portrange {lo}-{hi}" for lo, hi in ranges]
        bpf = " or ".join(terms)
        cmd = [tcpdump, "-i", self._iface, "-U", "--immediate-mode", "-s", "0", "-n"]
        if os.geteuid() == 0:
            cmd += ["-Z", "root"]  # keep the file ours (Debian's tcpdump drops to "tcpdump")
        cmd += ["-w", str(self._target), bpf]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        first = _first_line(proc)
        if b"listening on" not in first:
            _end(proc)
            text = first.decode(errors="replace").strip() or "no output"
            self.note = f"tcpdump could not capture on {self._iface}: {text}"
            self._target_unlink()
            return
        self._proc, self.pcap = proc, self._target

    def stop(self) -> None:
        """Stop tcpdump (idempotent)."""
        if self._proc is not None:
            time.sleep(DRAIN_S)
            _end(self._proc)
            self._proc = None

    def __enter__(self) -> WireEvidence:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _first_line(proc: subprocess.Popen[bytes]) -> bytes:
    """tcpdump's first stderr line, or b"" if it says nothing within READY_TIMEOUT_S."""
    assert proc.stderr is not None
    ready, _, _ = select.select([proc.stderr], [], [], READY_TIMEOUT_S)
    return proc.stderr.readline() if ready else b""


def _end(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stderr is not None:
        proc.stderr.close()
