"""All cores on one capture: the messages split by Call-ID, each worker building whole calls.

How this works: a call is one Call-ID (legs with other Call-IDs are tied later, from
:class:`~sipflow.correlate.facts.LegFacts`, by :mod:`sipflow.correlate.legs`), so the
call-building work - SIP parse, transactions, dialogs, calls, SDP offer/answer checks,
leg facts - splits cleanly by a hash of the Call-ID. With ``n`` shards, every shard reads
every source (decoding records is the cheap, vectorised part), frames TCP/TLS streams,
and parses only the messages whose Call-ID falls in its share (:meth:`Shard.mine`, on the
raw bytes, before parsing); messages without a Call-ID go to shard 0. Shard 0 runs in
the calling process and alone keeps what is per packet rather than per call: frame and
skip counts, ingest findings, RTP statistics and TLS session facts. Shards 1..n-1 run in
worker processes and send back their calls, activity, counts and the findings of the
messages they parsed (:class:`ShardOutput`, pickled by :func:`pack`: the frozen slotted
dataclasses of the calls rebuilt by their constructor); :func:`merge_results` adds them to
shard 0's.

A shard still sees the time of every message it does not parse (:class:`Tick`): the
transaction timers run on input time (RFC 3261 §17, time passed in), and a call whose
INVITE is never answered must time out at the same message whichever shard holds it.

What stays serial in the parent: leg correlation, mapping RTP streams to calls and
writing the output. The result equals the single-process one (tests/engine/test_shard.py),
except that findings are listed by frame instead of in the order they were raised.
"""

from __future__ import annotations

import copyreg
import io
import pickle
import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass, fields
from functools import cache
from operator import attrgetter
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sipflow.engine.local import SourceResult

# RFC 3261 §7.3.1, §20.8: "Call-ID" or the compact "i", any case, then HCOLON. Only the
# first match counts, which is in the header block (it precedes the body).
_CALL_ID = re.compile(rb"(?im)^(?:call-id|i)[ \t]*:[ \t]*([^\r\n]*)")


def call_id_of(data: bytes) -> bytes | None:
    """The Call-ID value of a raw SIP message (stripped), or None when it has none."""
    m = _CALL_ID.search(data)
    return m.group(1).strip() if m else None


BUCKETS = 4096
"""Call-IDs hash (CRC-32) into this many buckets; a shard owns a range of them."""
PACKET_SHARE = 0.04
"""The part of a whole run the per-packet work only shard 0 does (RTP statistics and
finishing the streams) takes on a capture with media, less what a worker spends sending
its calls back (pickled): shard 0 takes that much less of the Call-IDs so the shards end
together. Measured on the load capture (CPU, best of 3, 2026-11-29): with 0.15 shard 0
took 1.75 s and the worker 2.03 s (+0.14 s to pickle), with 0.0 2.05 s and 1.78 s."""


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


def plan(count: int) -> list[Shard]:
    """``count`` shards covering every bucket; shard 0 takes ``PACKET_SHARE`` less."""
    share = (1 + PACKET_SHARE) / count  # what each worker shard takes
    first = share - PACKET_SHARE
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


def run_shard(paths: list[str], shard: Shard, options: Any) -> bytes:
    """One worker shard over every path (in a worker process): its :class:`ShardOutput`,
    packed (:func:`pack`; the parent reads it with :func:`unpack`)."""
    from sipflow import api

    results, built = api.build_shard(paths, shard, options)
    sources = [
        SourcePart(
            r.malformed,
            r.stats.duplicates,
            [f for f in r.findings if not f.code.startswith("ingest.")],  # shard 0 reports those
        )
        for r in results
    ]
    return pack(ShardOutput(shard.index, sources, built))


def pack(out: ShardOutput) -> bytes:
    """``out`` pickled for the trip to the parent. Frozen slotted dataclasses pickle through
    ``dataclasses``' Python-level ``__getstate__``/``__setstate__``; the calls' records, SDP
    lines and refs go as (class, field values) instead, rebuilt by their constructor: half
    the instructions of pickling and unpickling a worker's calls (load capture: 650 M ->
    343 M, 1.0 MB)."""
    buf = io.BytesIO()
    pickler = pickle.Pickler(buf, protocol=pickle.HIGHEST_PROTOCOL)
    pickler.dispatch_table = _by_constructor()
    pickler.dump(out)
    return buf.getvalue()


def unpack(data: bytes) -> ShardOutput:
    """What :func:`pack` packed."""
    out: ShardOutput = pickle.loads(data)
    return out


_Reduce = Callable[[Any], Any]


@cache
def _by_constructor() -> dict[type, _Reduce]:
    """The pickling dispatch table of :func:`pack` (the classes a shard's calls are made of;
    each has an ``__init__`` taking every field, and no ``__post_init__``)."""
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
    names = [f.name for f in fields(cls)]
    values = attrgetter(*names)
    if len(names) == 1:
        return lambda obj: (cls, (values(obj),))
    return lambda obj: (cls, values(obj))


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
