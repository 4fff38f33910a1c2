"""Ordered SIP headers: wire order and case kept, compact forms understood.

How this works: a message's header block is split into :class:`Header` values in
wire order (folded continuation lines joined, RFC 3261 §7.3.1). Look-ups are by
canonical lower-case name, so ``i:`` and ``Call-ID:`` are the same header
(compact forms, RFC 3261 §7.3.3 and §20). Multi-value headers are split on commas
outside quotes and angle brackets (RFC 3261 §7.3.1).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

# RFC 3261 §7.3.3 compact forms, plus RFC 3515 (r), RFC 3892 (b), RFC 3841 (j,d),
# RFC 3265/6665 (o, u), RFC 3903? (none), RFC 4474 (y, n), RFC 4028 (x), RFC 3325 none.
COMPACT: dict[str, str] = {
    "i": "call-id",
    "m": "contact",
    "e": "content-encoding",
    "l": "content-length",
    "c": "content-type",
    "f": "from",
    "s": "subject",
    "k": "supported",
    "t": "to",
    "v": "via",
    "r": "refer-to",
    "b": "referred-by",
    "o": "event",
    "u": "allow-events",
    "x": "session-expires",
    "a": "accept-contact",
    "j": "reject-contact",
    "d": "request-disposition",
    "y": "identity",
    "n": "identity-info",
}

# Headers whose values are never comma lists (RFC 3261 §7.3.1: the exceptions
# WWW-Authenticate, Authorization, Proxy-Authenticate, Proxy-Authorization, and
# single-valued headers whose grammar allows commas, e.g. dates).
NOT_LISTS = frozenset(
    {
        "www-authenticate",
        "authorization",
        "proxy-authenticate",
        "proxy-authorization",
        "date",
        "call-id",
        "cseq",
        "from",
        "to",
        "subject",
        "user-agent",
        "server",
        "content-length",
        "content-type",
        "max-forwards",
        "organization",
        "retry-after",
        "timestamp",
        "expires",
        "min-expires",
    }
)


def canonical(name: str) -> str:
    """Lower-case long form of a header name (compact forms expanded)."""
    low = name.strip().lower()
    return COMPACT.get(low, low)


@dataclass(frozen=True, slots=True)
class Header:
    """One header as on the wire: ``name`` keeps its case, ``value`` is unfolded, ``raw`` is
    the line(s) exactly as received (empty for headers built in code)."""

    name: str
    value: str
    raw: str = ""

    @property
    def key(self) -> str:
        return canonical(self.name)


def split_commas(value: str) -> list[str]:
    """Split a header value on commas outside quoted strings and <...> (RFC 3261 §7.3.1)."""
    parts: list[str] = []
    depth = 0
    quoted = False
    escaped = False
    start = 0
    for i, ch in enumerate(value):
        if escaped:
            escaped = False
        elif quoted:
            if ch == "\\":
                escaped = True
            elif ch == '"':
                quoted = False
        elif ch == '"':
            quoted = True
        elif ch == "<":
            depth += 1
        elif ch == ">" and depth:
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(value[start:i].strip())
            start = i + 1
    parts.append(value[start:].strip())
    return [p for p in parts if p]


@dataclass(frozen=True, slots=True)
class Headers:
    """An ordered, immutable collection of headers with case-insensitive look-up."""

    items: tuple[Header, ...]

    def __iter__(self) -> Iterator[Header]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)

    def get(self, name: str) -> str | None:
        """Value of the first header called ``name`` (any case, compact or long)."""
        key = canonical(name)
        for h in self.items:
            if h.key == key:
                return h.value
        return None

    def get_all(self, name: str) -> list[str]:
        """Every value of ``name``, comma lists split, in wire order."""
        key = canonical(name)
        out: list[str] = []
        for h in self.items:
            if h.key == key:
                if key in NOT_LISTS:
                    out.append(h.value)
                else:
                    out.extend(split_commas(h.value))
        return out

    def count(self, name: str) -> int:
        key = canonical(name)
        return sum(1 for h in self.items if h.key == key)
