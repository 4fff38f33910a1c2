"""Content-Length framing of SIP messages on stream transports (TCP, TLS).

How this works: one :class:`StreamFramer` per direction of a stream receives the
in-order bytes (``Datagram`` values from TCP reassembly) and cuts them into whole SIP
messages (RFC 3261 §18.3): the header block runs to the first empty line, then exactly
Content-Length bytes of body follow. Between messages, CRLF keep-alives are skipped and
counted (RFC 5626 §3.5.1: "\\r\\n\\r\\n" ping, "\\r\\n" pong). When the stream lost bytes
(``Datagram.gap``) or carries something that is not SIP, the framer resynchronises on the
next line that is a SIP request or status line and counts the bytes it skipped.

A :class:`ByteFrames` map remembers which frames carried which byte range of the
buffer, so each message lists exactly the frames its bytes came from; it is trimmed as
messages are cut, so memory is bounded by the largest message being assembled. Nothing
here does I/O or reads a clock: times come in on the datagrams.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass

from sipflow.ingest.types import Datagram

MAX_BODY = 64 * 1024  # a larger Content-Length on a stream is treated as garbage
MAX_HEAD = 64 * 1024  # a header block longer than this without an empty line is garbage
MAX_LINE = 8 * 1024  # a start line longer than this is garbage
MAX_PROBLEM_FRAMES = 32  # frames kept on one "skipped bytes" problem

# RFC 3261 §25.1: Request-Line = Method SP Request-URI SP SIP-Version CRLF,
# Method = token; Status-Line = SIP-Version SP Status-Code SP Reason-Phrase CRLF.
# SIP-Version is case-insensitive (§7.1). The reason phrase may be empty in practice.
_TOKEN = rb"[!%*+\-.0-9A-Z_`a-z'~]+"
_VERSION = rb"(?i:SIP)/[0-9]+\.[0-9]+"
_START_LINE = re.compile(
    rb"(?:"
    + _TOKEN
    + rb" [^ \r\n]+ "
    + _VERSION
    + rb"|"
    + _VERSION
    + rb" [0-9]{3}(?: [^\r\n]*)?)\r?"
)
# Resynchronisation looks for a start line at a line beginning; SIP/2.0 only.
_RESYNC = re.compile(
    rb"^(?:("
    + _TOKEN
    + rb") [^ \r\n]+ (?i:SIP)/2\.0|(?i:SIP)/2\.0 [1-6][0-9]{2}(?: [^\r\n]*)?)\r?\n",
    re.M,
)
# Methods accepted at a position that may be mid-line (the first byte after a gap): a
# line fragment such as "ITE sip:b@x SIP/2.0" must not become a method "ITE".
KNOWN_METHODS = frozenset(
    b"INVITE ACK BYE CANCEL OPTIONS REGISTER PRACK SUBSCRIBE NOTIFY PUBLISH INFO REFER "
    b"MESSAGE UPDATE".split()
)
_START_PREFIX = re.compile(_TOKEN + rb" |" + _VERSION)
_EMPTY_LINE = re.compile(rb"\n\r?\n")
# RFC 3261 §20.14 / §7.3.3: Content-Length, compact form "l", any case, LWS around ":".
# The header block starts with the start line, so every header follows a "\n".
_CONTENT_LENGTH = re.compile(
    rb"\n(?:content-length|l)[ \t]*:[ \t]*([^\r\n]*?)[ \t]*(?=\r?\n)", re.I
)


@dataclass(frozen=True, slots=True)
class FramedMessage:
    """One SIP message cut from a stream.

    ``data``: the message bytes (start line, headers, empty line, body).
    ``frames``: 1-based frame numbers that carried these bytes, ascending.
    ``ts``: time (ns) of the datagram carrying the last byte.
    ``complete``: False when the message was cut short (end of stream, TCP gap) or its
    body length was unknowable (absurd Content-Length); the bytes are still returned.
    """

    data: bytes
    frames: tuple[int, ...]
    ts: int
    complete: bool = True


class ByteFrames:
    """Which frames carried which bytes of a buffer: runs of (end offset, frames, ts).

    ``add`` appends a run for bytes appended to the buffer; ``take`` consumes bytes from
    the front and returns the frames of the runs they touch and the ts of the last one.
    """

    __slots__ = ("_end", "_runs", "_start")

    def __init__(self) -> None:
        self._runs: deque[tuple[int, tuple[int, ...], int]] = deque()
        self._start = 0
        self._end = 0

    def __len__(self) -> int:
        return self._end - self._start

    def add(self, n: int, frames: tuple[int, ...], ts: int) -> None:
        if n > 0:
            self._end += n
            self._runs.append((self._end, frames, ts))

    def take(self, n: int) -> tuple[tuple[int, ...], int]:
        """Consume ``n`` bytes; return their frames (sorted, unique) and last byte's ts."""
        end = self._start + n
        runs = self._runs
        found: list[int] = []
        ts = -1
        last_end = self._start
        while runs and runs[0][0] <= end:
            last_end, frames, ts = runs.popleft()
            found.extend(frames)
        if runs and n > 0 and last_end < end:  # runs[0] holds the last byte(s)
            found.extend(runs[0][1])
            ts = runs[0][2]
        self._start = end
        return tuple(sorted(set(found))), ts

    def first_frames(self) -> tuple[int, ...]:
        """Frames of the run holding the first byte (for a problem about the buffer start)."""
        return self._runs[0][1] if self._runs else ()


class StreamFramer:
    """Cuts one direction of a SIP stream into messages (RFC 3261 §18.3).

    Counters: ``messages`` cut, ``keepalives`` (CRLF pings and pongs), ``skipped_bytes``
    (not SIP, skipped to resynchronise), ``incomplete`` (messages returned with
    ``complete=False``). ``problems`` holds (frames, text) for the caller to report.
    """

    def __init__(self, max_body: int = MAX_BODY, max_head: int = MAX_HEAD) -> None:
        self.max_body = max_body
        self.max_head = max_head
        self.messages = 0
        self.keepalives = 0
        self.skipped_bytes = 0
        self.incomplete = 0
        self.problems: list[tuple[tuple[int, ...], str]] = []
        self._buf = bytearray()
        self._map = ByteFrames()
        self._sync = True  # the buffer starts at a message boundary
        self._line_start = True  # when not in sync: the buffer starts at a line beginning
        self._scan = 0  # where to continue looking for the empty line
        self._head: tuple[int, int] | None = None  # (header block length, body length)
        self._skip_run = 0  # bytes skipped in the current resync episode
        self._skip_frames: list[int] = []

    @property
    def empty(self) -> bool:
        """Nothing buffered and at a message boundary: a new framer would do the same."""
        return not self._buf and self._sync

    # -- input -------------------------------------------------------------------------

    def feed(self, dg: Datagram) -> list[FramedMessage]:
        """Add the next in-order bytes of the stream; return the messages now complete."""
        if not self._buf and self._sync and not dg.gap:
            whole = self._whole(dg)
            if whole is not None:
                return [whole]
        out: list[FramedMessage] = []
        if dg.gap:
            self._cut(out, "bytes missing from the capture (TCP gap) cut this message short")
        if dg.payload:
            self._buf += dg.payload
            self._map.add(len(dg.payload), dg.frames, dg.ts)
        self._drain(out)
        return out

    def _whole(self, dg: Datagram) -> FramedMessage | None:
        """Fast path: a datagram that is exactly one message with one sane Content-Length."""
        data = dg.payload
        m = _EMPTY_LINE.search(data)
        if m is None or data[:1] in (b"\r", b"\n"):
            return None
        head = m.end()
        if not _START_LINE.fullmatch(data, 0, data.find(b"\n")):
            return None
        values = _CONTENT_LENGTH.findall(data, 0, head)
        if len(values) != 1 or not values[0].isdigit() or head + int(values[0]) != len(data):
            return None
        self.messages += 1
        return FramedMessage(data, dg.frames, dg.ts)

    def flush(self) -> list[FramedMessage]:
        """End of stream: return a trailing partial message flagged, count the rest."""
        out: list[FramedMessage] = []
        self._drain(out)
        buf = self._buf
        if bytes(buf) in (b"\r\n", b"\r\n\r"):  # a pong (and maybe half a ping)
            self.keepalives += 1
            self._skip(len(buf), count=len(buf) > 2)
        elif buf:
            self._cut(out, "stream ended inside this message")
        self._end_skip_run()
        self._sync, self._line_start = True, True
        return out

    # -- the loop ----------------------------------------------------------------------

    def _drain(self, out: list[FramedMessage]) -> None:
        while self._buf:
            if not self._sync:
                if not self._resync():
                    return
            elif not self._at_boundary(out):
                return

    def _at_boundary(self, out: list[FramedMessage]) -> bool:
        """One step at a message boundary; False when more bytes are needed."""
        buf = self._buf
        if self._head is None:
            if buf[0] in b"\r\n":
                return self._keepalive()
            if not self._start_line_ok():
                return not self._sync
            head = self._find_head(out)
            if head is None:
                return not self._sync
            self._head = head
        head_len, body_len = self._head
        if len(buf) < head_len + body_len:
            return False
        self._emit(out, head_len + body_len, complete=True)
        return True

    def _keepalive(self) -> bool:
        """RFC 5626 §3.5.1: CRLFCRLF is a ping, CRLF a pong; both are skipped."""
        buf = self._buf
        if buf.startswith(b"\r\n\r\n"):
            self.keepalives += 1
            self._skip(4, count=False)
        elif len(buf) < 4 and b"\r\n\r\n".startswith(buf):
            return False  # a pong, or the start of a ping: wait
        elif buf.startswith(b"\r\n"):
            self.keepalives += 1
            self._skip(2, count=False)
        else:  # a stray CR or LF
            self._skip(1, count=True)
            self._end_skip_run()
        return True

    def _start_line_ok(self) -> bool:
        """Check the first line once it is whole; leave sync if it is not SIP."""
        buf = self._buf
        nl = buf.find(b"\n", 0, MAX_LINE + 1)
        if nl < 0:
            if len(buf) <= MAX_LINE:
                return False
        elif _START_LINE.fullmatch(buf, 0, nl):
            return True
        self._lose_sync(self._map.first_frames(), "not a SIP start line", line_start=True)
        return False

    def _find_head(self, out: list[FramedMessage]) -> tuple[int, int] | None:
        """Find the header block and its Content-Length; None when more bytes are needed."""
        buf = self._buf
        m = _EMPTY_LINE.search(buf, self._scan)
        if m is None:
            self._scan = max(0, len(buf) - 2)
            if len(buf) > self.max_head:
                # Skip the start line too, or resync would find it again at once and loop.
                frames = self._map.first_frames()
                nl = buf.find(b"\n")
                self._skip(nl + 1 if nl >= 0 else len(buf), count=True)
                why = f"header block without an end within {self.max_head} bytes"
                self._lose_sync(frames, why, line_start=True)
            return None
        head_len = m.end()
        body_len, problem = self._content_length(buf, head_len)
        if body_len is None:
            self._emit(out, head_len, complete=False, problem=problem)
            self._lose_sync((), "", line_start=True)
            return None
        if problem:
            self.problems.append((self._map.first_frames(), problem))
        return head_len, body_len

    def _content_length(self, buf: bytearray, head_len: int) -> tuple[int | None, str]:
        """Body length from the header block: (length, problem text or "")."""
        values: list[bytes] = _CONTENT_LENGTH.findall(buf, 0, head_len)
        if not values:
            # RFC 3261 §18.3 / §20.14: Content-Length MUST be present on stream transports.
            return (
                0,
                "no Content-Length on a stream transport (RFC 3261 §18.3): body taken as empty",
            )
        raw = values[0]
        if not raw.isdigit() or int(raw) > self.max_body:
            text = raw.decode("latin-1")
            return None, f"unusable Content-Length {text!r} on a stream: resynchronising"
        if any(v != raw and (not v.isdigit() or int(v) != int(raw)) for v in values[1:]):
            return int(raw), "several Content-Length headers disagree: the first is used"
        return int(raw), ""

    def _emit(self, out: list[FramedMessage], n: int, *, complete: bool, problem: str = "") -> None:
        data = bytes(self._buf[:n])
        del self._buf[:n]
        frames, ts = self._map.take(n)
        self._head = None
        self._scan = 0
        if complete:
            self.messages += 1
        else:
            self.incomplete += 1
        if problem:
            self.problems.append((frames, problem))
        out.append(FramedMessage(data, frames, ts, complete))

    # -- losing and regaining sync -----------------------------------------------------

    def _cut(self, out: list[FramedMessage], why: str) -> None:
        """Stop the message in progress (gap or end of stream): return it flagged."""
        if self._buf and self._sync and self._looks_like_start():
            nl = self._buf.find(b"\n")
            done = f"{len(self._buf)} bytes"
            if self._head is not None:
                done += f" of {self._head[0] + self._head[1]}"
            elif nl < 0:
                done += ", start line incomplete"
            self._emit(out, len(self._buf), complete=False, problem=f"{why} ({done})")
        elif self._buf:
            self._skip(len(self._buf), count=True)
        self._end_skip_run()
        self._head = None
        self._scan = 0
        self._sync = False
        self._line_start = False

    def _looks_like_start(self) -> bool:
        nl = self._buf.find(b"\n")
        line = self._buf if nl < 0 else self._buf[:nl]
        return bool(_START_PREFIX.match(line)) or (nl < 0 and len(line) < 8)

    def _lose_sync(self, frames: tuple[int, ...], why: str, line_start: bool = True) -> None:
        if why:
            self.problems.append((frames, why))
        self._sync = False
        self._line_start = line_start
        self._head = None
        self._scan = 0

    def _resync(self) -> bool:
        """Skip to the next SIP start line; False when more bytes are needed."""
        buf = self._buf
        pos = 0
        for m in _RESYNC.finditer(buf):
            method = m.group(1)
            if m.start() > 0 or self._line_start or method is None or method in KNOWN_METHODS:
                pos = m.start()
                break
        else:
            cut = buf.rfind(b"\n") + 1
            if len(buf) - cut > MAX_LINE:
                cut = len(buf)
            if cut:
                self._skip(cut, count=True)
                self._line_start = True
            return False
        if pos:
            self._skip(pos, count=True)
        self._end_skip_run()
        self._sync = True
        return True

    def _skip(self, n: int, *, count: bool) -> None:
        del self._buf[:n]
        frames, _ = self._map.take(n)
        if count:
            self.skipped_bytes += n
            self._skip_run += n
            room = MAX_PROBLEM_FRAMES - len(self._skip_frames)
            self._skip_frames.extend(f for f in frames[:room] if f not in self._skip_frames)

    def _end_skip_run(self) -> None:
        if self._skip_run:
            text = f"skipped {self._skip_run} bytes that are not SIP to resynchronise"
            self.problems.append((tuple(sorted(self._skip_frames)), text))
        self._skip_run = 0
        self._skip_frames = []
