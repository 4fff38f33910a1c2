"""B2BUA configuration: a TOML file (docs/b2bua.md) read into frozen dataclasses.

How this works: :func:`load_config` reads the file with :mod:`tomllib` and
:func:`parse_config` turns the table into a :class:`Config`; every problem (unknown
transport, bad regex, missing key) raises :class:`~sipflow.errors.InputError` naming the
key, so ``sipflow b2bua`` exits with one line instead of a traceback.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sipflow.errors import InputError
from sipflow.ingest.types import Endpoint, Transport
from sipflow.sip.auth import Algorithm

_TRANSPORTS = {"udp": Transport.UDP, "tcp": Transport.TCP, "tls": Transport.TLS}


@dataclass(frozen=True, slots=True)
class Listen:
    """One listening socket."""

    transport: Transport
    host: str
    port: int
    cert: str | None = None
    """TLS certificate (PEM); with ``self_signed`` a pair is generated there if missing."""
    key: str | None = None
    self_signed: bool = False

    @property
    def endpoint(self) -> Endpoint:
        return Endpoint(self.host, self.port)


@dataclass(frozen=True, slots=True)
class Route:
    """Request-URI user matching ``pattern`` goes to ``target`` (``\\1`` etc. substituted)."""

    pattern: re.Pattern[str]
    target: str
    transport: Transport = Transport.UDP
    username: str | None = None
    """Credentials for upstream digest auth (RFC 3261 §22.2)."""
    password: str | None = None
    srtp: bool = False
    """Offer SDES SRTP on this leg (RFC 4568)."""
    timeout_s: float | None = None
    """No-answer timeout for this route (default: Config.no_answer_timeout_s)."""

    def target_for(self, user: str) -> str | None:
        m = self.pattern.search(user)
        return m.expand(self.target) if m else None


@dataclass(frozen=True, slots=True)
class CallerAuth:
    """Digest auth of callers (RFC 3261 §22.3): realm and user -> password."""

    realm: str
    users: dict[str, str]
    algorithm: Algorithm = Algorithm.MD5


@dataclass(frozen=True, slots=True)
class Config:
    listen: tuple[Listen, ...]
    routes: tuple[Route, ...]
    name: str = "sipflow-b2bua"
    x_cid: bool = False
    """Add ``X-CID: <A-leg Call-ID>`` to B-leg INVITEs (off: full topology hiding)."""
    no_answer_timeout_s: float = 60.0
    tcp_idle_timeout_s: float = 32.0
    """A TCP/TLS connection with no complete message for this long is closed."""
    media: str = "pass"
    """``pass`` (endpoints' SDP forwarded) or ``anchor`` (RTP relayed through our ports)."""
    rtp_ports: tuple[int, int] = (20000, 29999)
    """Anchored media: our RTP/RTCP port pairs come from this range (inclusive)."""
    media_ip: str | None = None
    """Anchored media: the address our RTP ports bind and our SDP names (default: the
    first listener's host)."""
    caller_auth: CallerAuth | None = None
    pcap: str | None = None
    log: str | None = None
    truth: str | None = None
    seed: int | None = None
    """Seed of tags/Call-IDs (tests); None: random."""
    extra: dict[str, Any] = field(default_factory=dict)
    keylog: str | None = None
    """NSS key log the TLS contexts append their secrets to (docs/tls.md)."""

    def listener(self, transport: Transport) -> Listen | None:
        return next((x for x in self.listen if x.transport is transport), None)


def _transport(value: object, where: str) -> Transport:
    if not isinstance(value, str) or value.lower() not in _TRANSPORTS:
        raise InputError(f"{where}: transport must be udp, tcp or tls, not {value!r}")
    return _TRANSPORTS[value.lower()]


def _listen(item: dict[str, Any], i: int) -> Listen:
    where = f"listen[{i}]"
    try:
        return Listen(
            _transport(item.get("transport", "udp"), where),
            str(item.get("host", "127.0.0.1")),
            int(item["port"]),
            item.get("cert"),
            item.get("key"),
            bool(item.get("self_signed", False)),
        )
    except (KeyError, ValueError, TypeError) as e:
        raise InputError(f"{where}: {e}") from None


def _route(item: dict[str, Any], i: int) -> Route:
    where = f"route[{i}]"
    try:
        pattern = re.compile(str(item["match"]))
        return Route(
            pattern,
            str(item["target"]),
            _transport(item.get("transport", "udp"), where),
            item.get("username"),
            item.get("password"),
            bool(item.get("srtp", False)),
            float(item["timeout"]) if "timeout" in item else None,
        )
    except (KeyError, ValueError, TypeError, re.error) as e:
        raise InputError(f"{where}: {e}") from None


def parse_config(data: dict[str, Any], base: Path | None = None) -> Config:
    """A Config from the TOML table (paths relative to ``base``)."""
    top = data.get("b2bua", {})
    listen = tuple(_listen(x, i) for i, x in enumerate(data.get("listen", [])))
    if not listen:
        raise InputError("config: at least one [[listen]] table is needed")
    routes = tuple(_route(x, i) for i, x in enumerate(data.get("route", [])))
    auth = data.get("auth")
    caller_auth = None
    if auth is not None:
        caller_auth = CallerAuth(
            str(auth.get("realm", "sipflow")),
            {str(k): str(v) for k, v in auth.get("users", {}).items()},
            Algorithm(auth.get("algorithm", "MD5")),
        )

    def path(key: str) -> str | None:
        value = top.get(key)
        if value is None:
            return None
        p = Path(value)
        return str(base / p if base is not None and not p.is_absolute() else p)

    media = str(top.get("media", "pass"))
    if media not in ("pass", "anchor"):
        raise InputError(f"b2bua.media must be 'pass' or 'anchor', not {media!r}")
    ports = top.get("rtp_ports", [20000, 29999])
    try:
        lo, hi = (int(x) for x in ports)
    except (TypeError, ValueError):
        raise InputError(f"b2bua.rtp_ports must be [first, last], not {ports!r}") from None
    if not 1024 <= lo < hi <= 65535:
        raise InputError(f"b2bua.rtp_ports must be two ports, first < last, not {ports!r}")
    return Config(
        listen=listen,
        routes=routes,
        name=str(top.get("name", "sipflow-b2bua")),
        x_cid=bool(top.get("x_cid", False)),
        no_answer_timeout_s=float(top.get("no_answer_timeout", 60.0)),
        tcp_idle_timeout_s=float(top.get("tcp_idle_timeout", 32.0)),
        media=media,
        rtp_ports=(lo, hi),
        media_ip=str(top["media_ip"]) if "media_ip" in top else None,
        caller_auth=caller_auth,
        pcap=path("pcap"),
        log=path("log"),
        truth=path("truth"),
        keylog=path("keylog"),
        seed=top.get("seed"),
    )


def load_config(path: str | Path) -> Config:
    """Read a TOML config file."""
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise InputError(f"{p}: {e}") from None
    return parse_config(data, p.parent)
