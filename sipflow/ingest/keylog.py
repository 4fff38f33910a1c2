"""NSS key log files: the TLS secrets an endpoint wrote while it talked.

How this works: the format (NSS "SSLKEYLOGFILE", also written by OpenSSL's keylog
callback, Python's ``SSLContext.keylog_filename``, curl, browsers) is one secret a line::

    <LABEL> <client_random or prefix, hex> <secret, hex>

``#`` starts a comment line. Secrets are keyed by (label, first hex field); the first
field is the 32-byte ClientHello.random for every label but ``RSA`` (the first 8 bytes
of the encrypted pre-master secret). Lines that do not follow the format are kept as
problems (line number, reason), never an exception; :func:`load_keylog` is the only
function here that opens a file.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field

__all__ = ["KeyLog", "Label", "load_keylog", "parse_keylog"]


class Label(enum.Enum):
    """Key log labels (NSS key log format; TLS 1.3 labels from RFC 8446 §7.1 secrets)."""

    CLIENT_RANDOM = "CLIENT_RANDOM"  # TLS <= 1.2 master secret (48 bytes)
    RSA = "RSA"  # encrypted pre-master prefix -> pre-master secret
    CLIENT_EARLY_TRAFFIC_SECRET = "CLIENT_EARLY_TRAFFIC_SECRET"
    CLIENT_HANDSHAKE_TRAFFIC_SECRET = "CLIENT_HANDSHAKE_TRAFFIC_SECRET"
    SERVER_HANDSHAKE_TRAFFIC_SECRET = "SERVER_HANDSHAKE_TRAFFIC_SECRET"
    CLIENT_TRAFFIC_SECRET_0 = "CLIENT_TRAFFIC_SECRET_0"
    SERVER_TRAFFIC_SECRET_0 = "SERVER_TRAFFIC_SECRET_0"
    EARLY_EXPORTER_SECRET = "EARLY_EXPORTER_SECRET"
    EXPORTER_SECRET = "EXPORTER_SECRET"


_LABELS = {label.value: label for label in Label}
_HEX = re.compile(rb"[0-9A-Fa-f]+")


@dataclass(slots=True)
class KeyLog:
    """Secrets by (label, client random); ``problems`` lists (1-based line, reason)."""

    secrets: dict[tuple[Label, bytes], bytes] = field(default_factory=dict)
    problems: list[tuple[int, str]] = field(default_factory=list)
    lines: int = 0

    def get(self, label: Label, client_random: bytes) -> bytes | None:
        return self.secrets.get((label, client_random))

    def merge(self, other: KeyLog) -> None:
        self.secrets.update(other.secrets)
        self.problems.extend(other.problems)
        self.lines += other.lines

    def __len__(self) -> int:
        return len(self.secrets)


def parse_keylog(data: bytes) -> KeyLog:
    """Parse key log text; bad lines become ``problems``, unknown labels are counted too."""
    log = KeyLog()
    for number, line in enumerate(data.splitlines(), 1):
        log.lines += 1
        line = line.strip()
        if not line or line.startswith(b"#"):
            continue
        problem = _add_line(log, line)
        if problem:
            log.problems.append((number, problem))
    return log


def _add_line(log: KeyLog, line: bytes) -> str | None:
    parts = line.split()
    if len(parts) != 3:
        return f"expected 3 fields, found {len(parts)}"
    label = _LABELS.get(parts[0].decode("ascii", "replace"))
    if label is None:
        return f"unknown label {parts[0][:40].decode('ascii', 'replace')!r}"
    if not (_HEX.fullmatch(parts[1]) and _HEX.fullmatch(parts[2])):
        return "fields are not hex"
    if len(parts[1]) % 2 or len(parts[2]) % 2:
        return "hex field of odd length"
    key, secret = bytes.fromhex(parts[1].decode()), bytes.fromhex(parts[2].decode())
    want = 8 if label is Label.RSA else 32
    if len(key) != want:
        return f"{label.value}: first field is {len(key)} bytes, expected {want}"
    log.secrets[(label, key)] = secret
    return None


def load_keylog(path: str) -> KeyLog:
    """Read and parse a key log file (``OSError`` propagates: the caller reports it)."""
    with open(path, "rb") as f:
        return parse_keylog(f.read())
