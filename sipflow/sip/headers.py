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
from functools import cached_property
from typing import NamedTuple

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

# Headers that may appear once only: a second one makes the message ambiguous
# (RFC 3261 §7.3.1 allows repeats only for comma-list headers; RFC 4475 §3.3.8, §3.3.9).
SINGLE = frozenset(
    {"call-id", "cseq", "from", "to", "max-forwards", "content-length", "content-type"}
)

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


_CANONICAL: dict[str, str] = {}


def canonical(name: str) -> str:
    """Lower-case long form of a header name (compact forms expanded, RFC 3261 §7.3.3)."""
    try:
        return _CANONICAL[name]
    except KeyError:
        low = name.strip().lower()
        key = COMPACT.get(low, low)
        if len(_CANONICAL) < 4096:  # bounded: names come from the wire
            _CANONICAL[name] = key
        return key


class Header(NamedTuple):
    """One header as on the wire: ``name`` keeps its case, ``value`` is unfolded, ``raw`` is
    the line(s) exactly as received (empty for headers built in code).

    A named tuple rather than a dataclass: a message has a dozen of these and building
    them is most of the parse time. ``canon`` caches the canonical name (the parser fills
    it); read ``key``, which works whether or not it was given.
    """

    name: str
    value: str
    raw: str = ""
    canon: str = ""

    @property
    def key(self) -> str:
        return self.canon or canonical(self.name)


def split_commas(value: str) -> list[str]:
    """Split a header value on commas outside quoted strings and <...> (RFC 3261 §7.3.1).

    Empty elements (``a,,b``) are left out: RFC 7230-style empty list elements carry no
    value; the message layer reports the malformed header itself where it matters.
    """
    if "," not in value:
        value = value.strip()
        return [value] if value else []
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


@dataclass(frozen=True)
class Headers:
    """An ordered, immutable collection of headers with case-insensitive look-up."""

    items: tuple[Header, ...]

    def __iter__(self) -> Iterator[Header]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)

    @cached_property
    def _index(self) -> dict[str, list[Header]]:
        index: dict[str, list[Header]] = {}
        for h in self.items:
            index.setdefault(h.canon or canonical(h.name), []).append(h)
        return index

    def get(self, name: str) -> str | None:
        """Value of the first header called ``name`` (any case, compact or long)."""
        found = self._index.get(canonical(name))
        return found[0].value if found else None

    def get_all(self, name: str) -> list[str]:
        """Every value of ``name``, comma lists split, in wire order."""
        key = canonical(name)
        found = self._index.get(key, ())
        if key in NOT_LISTS:
            return [h.value for h in found]
        out: list[str] = []
        for h in found:
            out.extend(split_commas(h.value))
        return out

    def count(self, name: str) -> int:
        return len(self._index.get(canonical(name), ()))

    def keys(self) -> list[str]:
        """Canonical names present, in order of first appearance."""
        return list(self._index)
