"""All cores on one capture: the messages split by Call-ID, each worker building whole calls.

How this works: a call is one Call-ID (legs with other Call-IDs are tied later, from
:class:`~sipflow.correlate.facts.LegFacts`, by :mod:`sipflow.correlate.legs`), so the
call-building work - SIP parse, transactions, dialogs, calls, SDP offer/answer checks,
leg facts - splits cleanly by a hash of the Call-ID. With ``n`` shards, shard 0 runs in
the calling process: it reads every source, frames TCP/TLS streams, and parses only the
messages whose Call-ID falls in its share (on the raw bytes, before parsing); messages
without a Call-ID are its own. It alone keeps what is per packet rather than per call:
frame and skip counts, ingest findings, RTP statistics and TLS session facts. Each other
message it sends, as it reads, to the worker process of that Call-ID's shard (bytes and
origin, :class:`Outbox`); every worker also gets the time of each message that is not its
own. A worker (:func:`run_shard` on an :class:`Inbox`) parses and builds as if it had read
the capture itself, without decoding a packet; it sends back its calls, activity, counts
and the findings of its messages (:class:`ShardOutput`, pickled by :func:`pack`: the
frozen slotted dataclasses of the calls rebuilt by their constructor); :func:`merge_results`
adds them to shard 0's. (The streaming run, :mod:`sipflow.engine.stream_run`, has each
worker read every packet itself: :meth:`Shard.mine`.)

A shard still sees the time of every message it does not parse (:class:`Tick`): the
transaction timers run on input time (RFC 3261 §17, time passed in), and a call whose
INVITE is never answered must time out at the same message whichever shard holds it.

What stays serial in the parent: leg correlation, mapping RTP streams to calls and
writing the output. The result equals the single-process one (tests/engine/test_shard.py),
except that findings are listed by frame instead of in the order they were raised.
"""

from __future__ import annotations

import contextlib
import copyreg
import io
import pickle
import re
import zlib
from bisect import bisect_right
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from functools import cache, partial
from operator import attrgetter
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from multiprocessing.connection import Connection
    from multiprocessing.process import BaseProcess

    from sipflow.engine.local import SourceResult
    from sipflow.ingest.types import Endpoint, Transport

# RFC 3261 §7.3.1, §20.8: "Call-ID" or the compact "i", any case, then HCOLON, at the start
# of a line. Only the first match counts, which is in the header block (it precedes the body).
_CALL_ID = re.compile(rb"(?i)(?:call-id|i)[ \t]*:[ \t]*([^\r\n]*)")
# The same after a newline: a pattern that starts with a literal is searched for that byte
# first, where ``(?m)^`` is tried at every offset (4x slower; shard 0 reads every message)
_CALL_ID_LINE = re.compile(rb"(?i)\n(?:call-id|i)[ \t]*:[ \t]*([^\r\n]*)")


def call_id_of(data: bytes) -> bytes | None:
    """The Call-ID value of a raw SIP message (stripped), or None when it has none."""
    m = _CALL_ID.match(data) or _CALL_ID_LINE.search(data)
    return m.group(1).strip() if m else None


BUCKETS = 4096
"""Call-IDs hash (CRC-32) into this many buckets; a shard owns a range of them."""
PACKET_SHARE = 0.04
"""The part of a whole run the per-packet work only shard 0 does (RTP statistics and
finishing the streams) takes on a capture with media, less what a worker spends sending
its calls back (pickled): shard 0 takes that much less of the Call-IDs so the shards end
together, when every worker reads the packets too (the streaming run, engine.stream_run).
Measured on the load capture (CPU, best of 3, 2026-11-29): with 0.15 shard 0 took 1.75 s
and the worker 2.03 s (+0.14 s to pickle), with 0.0 2.05 s and 1.78 s."""
FED_SHARE = 0.4
""":data:`PACKET_SHARE` when shard 0 feeds the workers (:class:`Outbox`, api._split): it
alone reads the packets, and a worker cannot run ahead of it, only finish its calls
after the last message; shard 0 then takes 30 % of the Call-IDs of two shards. Measured
on the load capture (CPU, best of 3, each side alone, 2026-11-30; before the last message
+ after it): with 0.04 shard 0 took 1.01 + 0.21 s and the worker 0.55 + 0.20 s; with 0.3
0.83 + 0.22 s and 0.72 + 0.25 s; with 0.5 0.73 + 0.13 s and 0.79 + 0.29 s."""


@dataclass(frozen=True, slots=True)
class Shard:
    """Shard ``index`` of ``count``, owning Call-ID buckets ``lo`` to ``hi`` (exclusive):
    which messages this process parses and builds."""

    index: int
    count: int
    lo: int = 0
    hi: int = BUCKETS

    @property
    def keeps_packets(self) -> bool:
        """Frame counts, ingest findings, RTP and TLS facts: kept by shard 0 only."""
        return self.index == 0

    def mine(self, data: bytes) -> bool:
        """Is the message in ``data`` this shard's to parse?"""
        cid = call_id_of(data)
        if cid is None:
            return self.index == 0
        return self.lo <= zlib.crc32(cid) % BUCKETS < self.hi


def plan(count: int, packets: float | None = None) -> list[Shard]:
    """``count`` shards covering every bucket; shard 0 takes ``packets`` (by default
    ``PACKET_SHARE``) less."""
    less = PACKET_SHARE if packets is None else packets
    share = (1 + less) / count  # what each worker shard takes
    first = share - less
    if first < 0:  # many shards: shard 0 has its packets to do and no Call-IDs
        first, share = 0.0, 1 / (count - 1)
    edges = [0, round(first * BUCKETS)]
    for k in range(1, count):
        edges.append(round((first + k * share) * BUCKETS))
    edges[-1] = BUCKETS
    return [Shard(k, count, edges[k], edges[k + 1]) for k in range(count)]


@dataclass(frozen=True, slots=True)
class Tick:
    """Another shard's message, reduced to its time: fed to this shard's CallBuilder as
    time passing, so §17 timers fire at the same input times as in a single run."""

    ts: int


@dataclass(frozen=True)
class SourcePart:
    """What a worker shard found in one source that shard 0 did not: the malformed
    messages and duplicates among its own messages, and their findings."""

    malformed: int
    duplicates: int
    findings: list[Any]


@dataclass
class ShardOutput:
    """What a worker shard sends back: per source its :class:`SourcePart`, and what its
    calls loop built. Nothing per packet (TLS keys, RTP) travels: shard 0 has it."""

    index: int
    sources: list[SourcePart]
    built: Any
    """A :class:`sipflow.api.Built` (typed loosely: api imports this module)."""


def run_shard(
    paths: list[str],
    shard: Shard,
    options: Any,
    inbox: Inbox | None = None,
    ship: Shipper | None = None,
) -> bytes:
    """One worker shard over every path (in a worker process): its :class:`ShardOutput`,
    packed (:func:`pack`; the parent reads it with :func:`unpack`). With an ``inbox`` the
    messages are those shard 0 read (:class:`Outbox`), else this process reads the paths;
    with ``ship`` the calls released before the end went ahead (:class:`Shipper`)."""
    from sipflow import api

    results, built = api.build_shard(paths, shard, options, inbox, ship)
    sources = [
        SourcePart(
            r.malformed,
            r.stats.duplicates,
            [f for f in r.findings if not f.code.startswith("ingest.")],  # shard 0 reports those
        )
        for r in results
    ]
    return pack(ShardOutput(shard.index, sources, built))


# -- shard 0 feeding the workers ----------------------------------------------------------
#
# A worker could read every packet itself, as shard 0 does; it would then decode the whole
# capture (RTP included) a second time: 28 % of a worker's instructions on the load capture.
# Instead shard 0, which reads every packet anyway, sends each worker what that worker
# would have found: its own messages whole (bytes and origin, framed and decrypted), the
# others as their time only. The worker parses and builds exactly as if it had read them.

_Item = tuple[Any, ...]
"""(source,): the source ended; (source, ts): another shard's message (a :class:`Tick`);
(source, ts, data, frames, src, dst, transport): a message of this worker's."""

BATCH = 500
"""Items pickled and written together: a worker is at most this many messages behind."""


class Outbox:
    """Shard 0's side of the feed: what each worker shard sees of every message, pickled in
    batches of ``BATCH`` and written to the worker's pipe. The pipe holds ``PIPE_BYTES``
    (Linux), so shard 0 waits only for a worker that many bytes behind."""

    def __init__(self, shards: list[Shard], conns: list[Connection]) -> None:
        self._his = [s.hi for s in shards]
        self._lists: list[list[_Item]] = [[] for _ in shards]  # [0]: shard 0, unused
        self._conns = conns
        for conn in conns:
            _widen(conn)
        self.failed = False
        """A worker stopped reading (it died): its output will be missing too."""

    def keep(
        self,
        source: int,
        data: bytes,
        ts: int,
        frames: tuple[int, ...],
        src: Endpoint | None,
        dst: Endpoint | None,
        transport: Transport,
    ) -> bool:
        """Is this message shard 0's to parse? Either way each worker is told of it."""
        cid = call_id_of(data)
        owner = 0 if cid is None else bisect_right(self._his, zlib.crc32(cid) % BUCKETS)
        lists = self._lists
        for k in range(1, len(lists)):
            if k == owner:
                lists[k].append((source, ts, data, frames, src, dst, transport))
            else:
                lists[k].append((source, ts))
        if len(lists[-1]) >= BATCH:
            self._send()
        return owner == 0

    def end(self, source: int) -> None:
        """Source ``source`` has no more messages."""
        for items in self._lists[1:]:
            items.append((source,))
        self._send()

    def _send(self) -> None:
        for k in range(1, len(self._lists)):
            items, self._lists[k] = self._lists[k], []
            if items and not self.failed:
                try:
                    self._conns[k - 1].send_bytes(pickle.dumps(items, pickle.HIGHEST_PROTOCOL))
                except OSError:  # the worker is gone (its reader closed): shard 0 goes on
                    self.failed = True


class Feed:
    """One source of shard 0 feeding the workers: :meth:`keep` for each message read,
    :meth:`end` once (more calls do nothing)."""

    def __init__(self, outbox: Outbox, source: int) -> None:
        self.keep = partial(outbox.keep, source)
        """Is a message (bytes, time, frames, src, dst, transport) shard 0's to parse?"""
        self._outbox = outbox
        self._source = source
        self._ended = False

    def end(self) -> None:
        if not self._ended:
            self._ended = True
            self._outbox.end(self._source)


PIPE_BYTES = 1 << 20
"""The most a pipe may hold without privileges (Linux ``/proc/sys/fs/pipe-max-size``)."""


def _widen(conn: Connection) -> int:
    """Let ``conn``'s pipe hold ``PIPE_BYTES`` where the system allows (Linux), instead of
    64 KiB (the worker then lags shard 0 by that much before shard 0 waits); the bytes it
    holds, 0 where that cannot be known."""
    try:
        import fcntl
    except ImportError:  # not a POSIX system: its pipes as they come
        return 0
    setpipe = getattr(fcntl, "F_SETPIPE_SZ", None)
    getpipe = getattr(fcntl, "F_GETPIPE_SZ", None)
    if setpipe is None or getpipe is None:
        return 0
    with contextlib.suppress(OSError):  # a smaller limit: the default size works too
        fcntl.fcntl(conn.fileno(), setpipe, PIPE_BYTES)
    try:
        return int(fcntl.fcntl(conn.fileno(), getpipe))
    except OSError:
        return 0


SHIP_CALLS = 100
"""A worker sends its released calls back in runs of this many (:class:`Shipper`)."""


class Shipper:
    """A worker shard's released calls sent back in runs while shard 0 is still reading,
    so shard 0 unpickles them while the worker finishes its last calls (most of a
    worker's finishing time on the load capture), instead of after. Only what the result
    pipe holds goes early: shard 0 reads it once its own part is done, and a worker
    waiting on it would stop reading its feed while shard 0 waits to write it."""

    every = SHIP_CALLS

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._pages = _widen(conn) // _PAGE
        """Pipe pages still free (Linux counts a pipe's room in pages)."""

    def send(self, calls: list[Any]) -> bool:
        """Send ``calls`` now, if the pipe holds them without waiting; False (and nothing
        sent) when it would not: the rest go with the :class:`ShardOutput`."""
        data = _dumps(calls)
        pages = (len(data) + 4) // _PAGE + 2  # the length header, and a page partly used
        if pages > self._pages:
            self._pages = 0
            return False
        self._conn.send_bytes(data)
        self._pages -= pages
        return True


_PAGE = 4096


class Inbox:
    """A worker shard's side of the feed: the items of each source, in the order shard 0
    read them (a source's items wait here while the timeline reads another's)."""

    def __init__(self, conn: Connection, sources: int) -> None:
        self._conn = conn
        self._pending: list[deque[_Item]] = [deque() for _ in range(sources)]
        self._ended = [False] * sources

    def items(self, source: int) -> Iterator[_Item]:
        """Source ``source``'s items up to its end (EOFError when shard 0 is gone)."""
        pending = self._pending[source]
        while True:
            while pending:
                yield pending.popleft()
            if self._ended[source]:
                return
            for item in pickle.loads(self._conn.recv_bytes()):
                if len(item) == 1:
                    self._ended[item[0]] = True
                else:
                    self._pending[item[0]].append(item)


class Workers:
    """The worker shards' processes, each fed by shard 0 through a pipe (:class:`Outbox`)
    and sending its :class:`ShardOutput` back through another."""

    def __init__(self) -> None:
        self.procs: list[BaseProcess] = []
        self.results: list[Connection] = []
        self.feeds: list[Connection] = []

    @classmethod
    def start(cls, paths: list[str], shards: list[Shard], options: Any) -> Workers | None:
        """One process per shard of ``shards`` (those after shard 0); None when processes
        cannot be had here (sandbox, no semaphores)."""
        import multiprocessing

        ctx = multiprocessing.get_context()
        workers = cls()
        try:
            for shard in shards:
                feed_in, feed_out = ctx.Pipe(duplex=False)
                result_in, result_out = ctx.Pipe(duplex=False)
                # the parent's ends, closed in the child: a worker sees the end of its feed
                # when shard 0 goes away, not only when every process that forked does
                ours = [*workers.feeds, *workers.results, feed_out, result_in]
                args = (run_shard, paths, shard, options, feed_in, result_out, ours)
                proc = ctx.Process(target=_worker, args=args, daemon=True)
                proc.start()
                feed_in.close()
                result_out.close()
                workers.procs.append(proc)
                workers.feeds.append(feed_out)
                workers.results.append(result_in)
        except (OSError, ValueError, RuntimeError):
            workers.stop()
            return None
        return workers

    def outbox(self, shards: list[Shard]) -> Outbox:
        """The feed of every worker (``shards``: the whole plan)."""
        return Outbox(shards, self.feeds)

    def outputs(self) -> list[ShardOutput] | None:
        """Every worker's output; None when one failed (died, or raised)."""
        outputs: list[ShardOutput] = []
        for conn in self.results:
            early: list[Any] = []  # the calls a worker sent ahead (Shipper), in order
            try:
                while not isinstance(part := _loads(conn.recv_bytes()), ShardOutput):
                    early.extend(part)
            except (EOFError, OSError, pickle.UnpicklingError):
                return None
            part.built.calls[:0] = early
            outputs.append(part)
        return outputs

    def stop(self) -> None:
        """Close the pipes and end the processes (the ones still running are killed)."""
        for conn in [*self.feeds, *self.results]:
            conn.close()
        for proc in self.procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
                proc.join()


def _worker(
    run: Callable[..., bytes],
    paths: list[str],
    shard: Shard,
    options: Any,
    feed: Connection,
    result: Connection,
    parents: list[Connection],
) -> None:
    """A worker process: ``run`` (:func:`run_shard`) on what shard 0 feeds it; nothing is
    sent back when it fails, which shard 0 sees as the end of the pipe."""
    for conn in parents:
        conn.close()
    try:
        data = run(paths, shard, options, Inbox(feed, len(paths)), Shipper(result))
    except Exception:  # shard 0 redoes the run in one process (api._split)
        return
    with contextlib.suppress(OSError):  # shard 0 stopped waiting (it failed itself)
        result.send_bytes(data)


def pack(out: ShardOutput) -> bytes:
    """``out`` pickled for the trip to the parent. Frozen slotted dataclasses pickle through
    ``dataclasses``' Python-level ``__getstate__``/``__setstate__``; the calls' records, SDP
    lines and refs go as (builder, field values) instead, rebuilt like their constructor
    would (:func:`sipflow.frozen.builder`): half the instructions of pickling and
    unpickling a worker's calls (load capture: 650 M -> 343 M, 1.0 MB); the builders
    unpickle them a fifth faster again than the constructors (1,743 calls: 65 -> 52 ms)."""
    return _dumps(out)


def unpack(data: bytes) -> ShardOutput:
    """What :func:`pack` packed."""
    out: ShardOutput = _loads(data)
    return out


def _dumps(value: Any) -> bytes:
    buf = io.BytesIO()
    pickler = pickle.Pickler(buf, protocol=pickle.HIGHEST_PROTOCOL)
    pickler.dispatch_table = _by_constructor()
    pickler.dump(value)
    return buf.getvalue()


def _loads(data: bytes) -> Any:
    _by_constructor()  # defines the builders the data names (module globals)
    return pickle.loads(data)


_Reduce = Callable[[Any], Any]


@cache
def _by_constructor() -> dict[type, _Reduce]:
    """The pickling dispatch table of :func:`pack` (the classes a shard's calls are made of;
    frozen slotted dataclasses whose ``__init__`` takes every field, no ``__post_init__``)."""
    from sipflow.correlate.calls import CallRecord
    from sipflow.correlate.facts import HopTimes
    from sipflow.findings import Finding, Ref
    from sipflow.sdp.media import CallMedia, MediaExchange, MediaLine
    from sipflow.sdp.model import Format

    table: dict[type, _Reduce] = dict(copyreg.dispatch_table)
    for cls in (CallRecord, CallMedia, MediaExchange, MediaLine, Format, HopTimes, Ref, Finding):
        table[cls] = _constructor_reduce(cls)
    return table


def _constructor_reduce(cls: type) -> _Reduce:
    """Reduce an instance of ``cls`` to ``(_new_<cls>, field values)``, where ``_new_<cls>``
    is the class's :func:`~sipflow.frozen.builder`, made a global of this module so pickle
    names it (the frozen ``__init__`` costs more: one ``object.__setattr__`` a field)."""
    from sipflow.frozen import builder

    new = builder(cls)
    new.__name__ = new.__qualname__ = f"_new_{cls.__name__}"
    new.__module__ = __name__
    globals()[new.__name__] = new
    values = attrgetter(*[f.name for f in fields(cls)])
    if len(fields(cls)) == 1:
        return lambda obj: (new, (values(obj),))
    return lambda obj: (new, values(obj))


def merge_results(results: list[SourceResult], parts: list[SourcePart]) -> None:
    """Add a worker shard's per-source counts and message findings to shard 0's."""
    for mine, theirs in zip(results, parts, strict=True):
        mine.malformed += theirs.malformed
        mine.stats.duplicates += theirs.duplicates
        mine.findings.extend(theirs.findings)


def by_frame(findings: list[Any]) -> list[Any]:
    """Findings in frame order (stable): the order a split run can reproduce."""

    def key(f: Any) -> tuple[int, int]:
        return (f.refs[0].source, f.refs[0].frame) if f.refs else (-1, -1)

    return sorted(findings, key=key)
