"""MIME bodies that carry SDP: plain ``application/sdp`` and multipart (RFC 2046 §5.1).

How this works: :func:`sdp_body` takes a message's Content-Type value and body and returns
the SDP bytes in it: the body itself for ``application/sdp``; for ``multipart/*`` (mixed,
alternative, related: e.g. SIPREC, RFC 7866 §8, or SIP-I ISUP + SDP) the first
``application/sdp`` part found, nested multiparts searched depth first. A body with no
Content-Type that starts with ``v=`` is taken as SDP (logs often drop the header).
Multipart framing that cannot be followed (no boundary parameter, boundary not found)
raises :class:`~sipflow.errors.ParseError`.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from sipflow.errors import ParseError

MAX_DEPTH = 4  # nested multiparts followed at most this deep


@dataclass(frozen=True, slots=True)
class Part:
    """One body part: its headers (name, value) in order and its bytes."""

    headers: tuple[tuple[str, str], ...]
    body: bytes

    @property
    def content_type(self) -> str:
        for name, value in self.headers:
            if name.lower() in ("content-type", "c"):
                return value
        return "text/plain"  # RFC 2046 §5.1.1: the default in a multipart part


def media_type(content_type: str | None) -> tuple[str, dict[str, str]]:
    """``type/subtype`` lower-cased and the parameters (quotes removed), RFC 2045 §5.1."""
    if not content_type:
        return "", {}
    head, *params = _split_params(content_type)
    out: dict[str, str] = {}
    for p in params:
        name, eq, value = p.partition("=")
        if eq:
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            out[name.strip().lower()] = value
    return head.strip().lower(), out


def _split_params(text: str) -> list[str]:
    """Split on ';' outside double quotes."""
    if '"' not in text:
        return text.split(";")  # nothing quoted (nearly always): the same parts, no char loop
    parts: list[str] = []
    cur: list[str] = []
    quoted = False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        if ch == ";" and not quoted:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return parts


def parse_multipart(content_type: str, body: bytes) -> tuple[Part, ...]:
    """The parts of a multipart body (RFC 2046 §5.1.1). Raises ParseError."""
    _, params = media_type(content_type)
    boundary = params.get("boundary")
    if not boundary:
        raise ParseError("multipart", "Content-Type has no boundary parameter (RFC 2046 §5.1.1)")
    delim = b"--" + boundary.encode("utf-8", "surrogateescape")
    chunks = _split_delimiters(body, delim)
    if chunks is None:
        raise ParseError("multipart", f"boundary {boundary[:40]!r} not found in the body")
    return tuple(_part(c) for c in chunks)


def _split_delimiters(body: bytes, delim: bytes) -> list[bytes] | None:
    """Bytes between delimiter lines; the CRLF before each delimiter belongs to it."""
    starts: list[tuple[int, int]] = []  # (start of delimiter line, end of delimiter line)
    pos = 0
    while True:
        i = body.find(delim, pos)
        if i < 0:
            break
        if i == 0 or body[i - 1 : i] == b"\n":
            eol = body.find(b"\n", i)
            starts.append((i, len(body) if eol < 0 else eol + 1))
        pos = i + len(delim)
    if not starts:
        return None
    out = []
    for (_, end), (nxt, _) in itertools.pairwise(starts):
        chunk = body[end:nxt]
        out.append(chunk[:-2] if chunk.endswith(b"\r\n") else chunk.removesuffix(b"\n"))
    return out


def _part(chunk: bytes) -> Part:
    for sep in (b"\r\n\r\n", b"\n\n"):
        i = chunk.find(sep)
        if i >= 0:
            head, body = chunk[:i], chunk[i + len(sep) :]
            break
    else:
        if chunk.startswith((b"\r\n", b"\n")):  # no headers at all
            return Part((), chunk.lstrip(b"\r\n"))
        head, body = chunk, b""
    headers = []
    for line in head.decode("utf-8", "surrogateescape").splitlines():
        name, colon, value = line.partition(":")
        if colon:
            headers.append((name.strip(), value.strip()))
    return Part(tuple(headers), body)


def sdp_body(content_type: str | None, body: bytes, depth: int = 0) -> bytes | None:
    """The SDP carried by a body, or None when it carries none. Raises ParseError."""
    if not body:
        return None
    if content_type == "application/sdp":  # the usual value, as written: nothing to split
        return body
    mime, _ = media_type(content_type)
    if mime == "application/sdp":
        return body
    if not mime:
        return body if body.lstrip()[:2] == b"v=" else None
    if not mime.startswith("multipart/") or depth >= MAX_DEPTH:
        return None
    assert content_type is not None
    for part in parse_multipart(content_type, body):
        found = sdp_body(part.content_type, part.body, depth + 1)
        if found is not None:
            return found
    return None
