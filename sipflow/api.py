"""``analyze(sources) -> Trace``: the one entry used by the CLI, notebooks and tests.

How this works: each source runs the per-source stage (:mod:`sipflow.engine.local`),
the streams are merged on one timeline with duplicate captures dropped
(:mod:`sipflow.engine.merge`), and every message is counted and fed to the sans-IO
:class:`~sipflow.correlate.calls.CallBuilder`, which releases calls as they finish.
A source that cannot be read at all becomes an ``ingest.unreadable`` Finding; the
others are still analysed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sipflow.checks.sdp import CallMedia, media_for_call
from sipflow.correlate.calls import BuilderOutput, CallBuilder, CallRecord
from sipflow.correlate.facts import LegFacts, facts_of
from sipflow.correlate.legs import correlate
from sipflow.engine.local import (
    SourceResult,
    reread_media,
    source_messages,
)
from sipflow.engine.merge import drop_duplicates, merge_timeline
from sipflow.engine.progress import ProgressCallback, ProgressTracker
from sipflow.engine.shard import Tick
from sipflow.errors import InputError
from sipflow.findings import Finding, Severity
from sipflow.gcpause import paused
from sipflow.ingest.types import SourceStats
from sipflow.sip.message import SipMessage, SipRequest
from sipflow.trace import ActivitySummary, Trace

if TYPE_CHECKING:
    from sipflow.engine.shard import Feed, Inbox, Outbox, Shard, Shipper
    from sipflow.engine.stream import RowSink, StreamOptions
    from sipflow.engine.stream_run import StreamResult
    from sipflow.ingest.pbxlog import ChannelEvent
    from sipflow.ingest.tls import TlsKeys
    from sipflow.rtp.dtmf import Digit
    from sipflow.rtp.streams import RtpStream


@dataclass
class Options:
    """What to keep and how to read. ``keep_messages`` keeps every SipMessage on the Trace
    (for notebooks and ladders); the CLI's summary does not need them."""

    keep_messages: bool = True
    keep_records: bool = True
    """Keep each call's transactions/dialogs and the non-call transaction records (for the
    ``transactions``/``dialogs`` DataFrames). Off, memory holds only call summaries."""
    jobs: int = 1
    """Processes (docs/scale.md): 1 runs in this process, 0 uses every core. Captures
    are split by Call-ID over the processes (:mod:`sipflow.engine.shard`) when there is
    enough to read (``split``) and nothing per message is kept; otherwise several files
    go one per worker (:mod:`sipflow.engine.pool`)."""
    split: bool | None = None
    """Split by Call-ID when ``jobs`` allows: None decides by size (at least
    ``SPLIT_MIN_BYTES`` of captures), True whenever possible, False never."""
    engine: str = "local"
    """``local`` (this machine) or ``dask`` (tasks on the cluster at ``scheduler``)."""
    scheduler: str | None = None
    """Address of the Dask scheduler for ``engine="dask"`` (``tcp://host:8786``)."""
    tls_keylog: list[str] = field(default_factory=list)
    """NSS key log files (SSLKEYLOGFILE format) to decrypt SIP over TLS (docs/tls.md)."""
    tls_keys: list[str] = field(default_factory=list)
    """PEM/DER RSA server private keys, for TLS <= 1.2 RSA key exchange."""
    log_year: int | None = None
    """The year of PBX log times written without one (syslog ``Jan 22 13:35:21``); None:
    the year the log file was last modified (docs/logs.md)."""
    progress: ProgressCallback | None = None
    """Called with a :class:`~sipflow.engine.progress.ProgressEvent` per chunk of records
    read (at most every 0.1 s) and per file finished; the last has ``files_done ==
    files_total``."""


SPLIT_MIN_BYTES = 16 * 1024 * 1024
"""Below this much capture, starting worker processes costs more than it saves."""


@dataclass
class _Counts:
    requests: Counter[str] = field(default_factory=Counter)
    responses: Counter[str] = field(default_factory=Counter)
    transports: Counter[str] = field(default_factory=Counter)
    total: int = 0
    first_ts: int | None = None
    last_ts: int | None = None

    def add(self, msg: SipMessage) -> None:
        self.total += 1
        if isinstance(msg, SipRequest):
            self.requests[msg.method] += 1
        else:
            self.responses[str(msg.status)] += 1
        if msg.origin is not None:
            self.transports[msg.origin.transport.value] += 1
        if self.first_ts is None:
            self.first_ts = msg.ts
        self.last_ts = msg.ts

    def merge(self, other: _Counts) -> None:
        """Add the counts of another shard (:mod:`sipflow.engine.shard`)."""
        self.requests.update(other.requests)
        self.responses.update(other.responses)
        self.transports.update(other.transports)
        self.total += other.total
        firsts = [t for t in (self.first_ts, other.first_ts) if t is not None]
        lasts = [t for t in (self.last_ts, other.last_ts) if t is not None]
        self.first_ts = min(firsts) if firsts else None
        self.last_ts = max(lasts) if lasts else None


@dataclass
class Built:
    """What the call-building loop made of a timeline of messages (all, or one shard's)."""

    counts: _Counts
    calls: list[tuple[CallRecord, CallMedia, LegFacts]]
    activity: ActivitySummary
    findings: list[Finding]
    kept: list[SipMessage]


def expand_paths(paths: Iterable[str | Path]) -> list[str]:
    """Files as given; a directory stands for the files in it, sorted by name."""
    out: list[str] = []
    for p in paths:
        path = Path(p)
        if str(p) != "-" and path.is_dir():
            out.extend(str(c) for c in sorted(path.iterdir()) if c.is_file())
        else:
            out.append(str(p))
    return out


def analyze(sources: Iterable[str | Path], options: Options | None = None) -> Trace:
    """Analyse captures (pcap, pcapng, gzip, ``-`` for stdin) into one Trace."""
    # Messages and records form no reference cycles worth collecting mid-run (see
    # sipflow.gcpause): the collector walking every retained message is paused.
    with paused():
        return _analyze(sources, options)


def _analyze(sources: Iterable[str | Path], options: Options | None) -> Trace:
    opts = options or Options()
    paths = expand_paths(sources)
    tracker = ProgressTracker.start(paths, opts.progress)
    shards = _shards(paths, opts)
    split = _split(paths, shards, opts, tracker) if shards > 1 else None
    if split is not None:
        from sipflow.engine.shard import by_frame

        results, built = split
        built.findings = by_frame(built.findings)  # shards raise them in their own order
        for r in results:
            r.findings = by_frame(r.findings)
    else:
        per_source: Sequence[Iterator[SipMessage | Tick]]
        if opts.engine != "local" or (opts.jobs != 1 and len(paths) > 1):
            from sipflow.engine.pool import Reading, run_engine

            keys = _tls_keys(opts)  # an unusable key file: a usage error, before any work
            reading = Reading(tuple(opts.tls_keylog), tuple(opts.tls_keys), opts.log_year)
            results, per_source = run_engine(
                paths, opts.engine, opts.jobs, opts.scheduler, tracker, reading
            )
            for r in results:
                r.tls_keys = keys
        else:
            results, per_source = _local_sources(paths, opts)
        if tracker is not None:
            per_source = tracker.attach(results, per_source)
        built = _build(per_source, results, opts)
    calls, findings = built.calls, built.findings
    calls.sort(key=lambda cm: (cm[0].start, cm[0].call_ids))
    for r in results:
        findings[:0] = r.findings
    events = _channel_events(results)
    legs = [f for _, _, f in calls]
    correlation = correlate(legs, events)
    findings.extend(correlation.findings)
    rtp_streams, quality, media_findings, rtp_digits = _media(results, calls, paths)
    findings.extend(media_findings)
    findings[:0] = _keylog_findings(results)
    if shards > 1 and split is None:
        text = "a worker of the run split by Call-ID failed; analysed again in one process"
        findings.append(Finding("engine.split_failed", Severity.INFO, text))
    if tracker is not None:
        tracker.finish()
    return _trace(
        results,
        built,
        call_records=_media_extended([c for c, _, _ in calls], rtp_streams),
        call_media=[m for _, m, _ in calls],
        leg_facts=legs,
        correlation=correlation,
        finding_list=findings,
        message_list=built.kept,
        channel_event_list=events,
        rtp_stream_list=rtp_streams,
        call_quality=quality,
        call_rtp_digits=rtp_digits,
    )


def _trace(results: list[SourceResult], built: Built, **parts: Any) -> Trace:
    """A Trace of the sources read and what was counted; ``parts``: calls, findings, media."""
    counts = built.counts
    return Trace(
        sources=[r.stats for r in results],
        counts_requests=dict(counts.requests),
        counts_responses=dict(counts.responses),
        transports=dict(counts.transports),
        sip_messages=counts.total,
        malformed=sum(r.malformed for r in results),
        start=counts.first_ts,
        end=counts.last_ts,
        activity=built.activity,
        unreadable=[r.stats.path for r in results if "unreadable" in r.stats.skipped],
        tls_sessions=[s for r in results for s in r.tls.tls_sessions],
        **parts,
    )


def analyze_stream(
    sources: Iterable[str | Path],
    sink: RowSink,
    options: Options | None = None,
    stream: StreamOptions | None = None,
) -> StreamResult:
    """Analyse captures writing call stories, RTP streams and findings to ``sink`` as they
    finish (:mod:`sipflow.engine.stream`): memory holds the calls and streams still open,
    not the whole capture. With ``options.jobs`` other than 1 and enough to read, the work
    is split by Call-ID over processes (:mod:`sipflow.engine.stream_run`). PBX logs need
    their channel lines whole: with a log among ``sources`` the whole-capture analysis
    runs and its rows go to ``sink`` at the end."""
    from sipflow.engine import stream_run
    from sipflow.engine.stream import StreamOptions

    paths = expand_paths(sources)
    opts = replace(options or Options(), keep_messages=False, keep_records=False)
    with paused():
        from sipflow.engine.local import is_log

        if any(is_log(p) for p in paths):
            return _stream_whole(paths, sink, replace(opts, jobs=1))
        shards = _shards(paths, opts)
        return stream_run.run(paths, sink, opts, stream or StreamOptions(), shards)


def _stream_whole(paths: list[str], sink: RowSink, opts: Options) -> StreamResult:
    from sipflow.engine.stream_run import StreamResult

    trace = _analyze(paths, opts)
    doc = trace.to_dict()
    sink.calls(doc.pop("calls"))
    sink.streams(doc.pop("rtp_streams"))
    sink.findings(doc.pop("findings"))
    n_calls = len(trace.groups())
    return StreamResult(
        doc, n_calls, len(trace.rtp_stream_list), trace.unreadable, len(paths), n_calls
    )


def _starts(results: list[SourceResult]) -> list[int | None] | None:
    """First record time of each source, when there are several (merge_timeline opens a
    source when the timeline reaches it)."""
    if len(results) < 2:
        return None
    from sipflow.engine.local import first_record_ts

    return [first_record_ts(r.stats.path) for r in results]


def _local_sources(
    paths: list[str], opts: Options, shard: Shard | None = None, outbox: Outbox | None = None
) -> tuple[list[SourceResult], list[Iterator[SipMessage | Tick]]]:
    """Each source's result and time-ordered messages, read in this process (shard 0 with
    an ``outbox`` sends the worker shards theirs as it reads, :mod:`sipflow.engine.shard`)."""
    keys = _tls_keys(opts)
    results = [
        SourceResult(SourceStats(path=p), tls_keys=keys, shard=shard, log_year=opts.log_year)
        for p in paths
    ]
    pairs = enumerate(zip(paths, results, strict=True))
    if outbox is None:
        return results, [_guarded(p, i, r) for i, (p, r) in pairs]
    from sipflow.engine.shard import Feed

    feeds = [Feed(outbox, i) for i in range(len(paths))]
    for r, feed in zip(results, feeds, strict=True):
        r.feed = feed
    return results, [_feeding(_guarded(p, i, r), feeds[i]) for i, (p, r) in pairs]


def _feeding(messages: Iterator[SipMessage | Tick], feed: Feed) -> Iterator[SipMessage | Tick]:
    """A source's messages read by shard 0; the workers are told when the source ends
    (if reading it did not already: an unreadable source)."""
    yield from messages
    feed.end()


def _build(
    per_source: Sequence[Iterator[SipMessage | Tick]],
    results: list[SourceResult],
    opts: Options,
    ship: Shipper | None = None,
) -> Built:
    """The messages of every source on one timeline, duplicates dropped, built into calls
    (each judged for SDP when released) and non-call activity. With ``ship`` (a worker
    shard) the calls released before the end are sent back in runs as they come."""
    built = Built(_Counts(), [], ActivitySummary(keep_records=opts.keep_records), [], [])
    builder = CallBuilder()
    for msg in _timeline(per_source, results):
        _step(builder, built, msg, opts)
        if ship is not None and len(built.calls) >= ship.every:
            if ship.send(built.calls):
                built.calls = []
            else:  # the pipe is full: the rest go at the end
                ship = None
    _take(builder.finish(), built.calls, built.activity, built.findings, opts.keep_records)
    return built


def _timeline(
    per_source: Sequence[Iterator[SipMessage | Tick]],
    results: list[SourceResult],
    starts: Sequence[int | None] | None = None,
) -> Iterator[SipMessage | Tick]:
    """Every source's messages on one timeline (rotated files opened as it reaches them:
    ``starts``, else read here), duplicate captures dropped and counted on their source."""

    def on_duplicate(msg: SipMessage) -> None:
        results[msg.origin.source if msg.origin else 0].stats.duplicates += 1

    if starts is None:
        starts = _starts(results)
    return drop_duplicates(merge_timeline(per_source, starts), on_duplicate)


def _step(builder: CallBuilder, built: Built, msg: SipMessage | Tick, opts: Options) -> None:
    """One item of the timeline built: a message fed, or (a Tick: another shard's message,
    engine.shard) time passing; what the builder releases is filed on ``built``."""
    if isinstance(msg, Tick):
        out = builder.expire(msg.ts)
    else:
        built.counts.add(msg)
        if opts.keep_messages:
            built.kept.append(msg)
        out = builder.feed(msg)
    _take(out, built.calls, built.activity, built.findings, opts.keep_records)


def build_shard(
    paths: list[str],
    shard: Shard,
    opts: Options,
    inbox: Inbox | None = None,
    ship: Shipper | None = None,
) -> tuple[list[SourceResult], Built]:
    """One shard's part of the analysis (:mod:`sipflow.engine.shard`), in this process:
    on the messages shard 0 sends to ``inbox``, else read here; released calls sent back
    ahead through ``ship``."""
    if inbox is None:
        results, per_source = _local_sources(paths, opts, shard)
    else:
        from sipflow.engine.local import fed_messages

        results = [SourceResult(SourceStats(path=p), shard=shard) for p in paths]
        per_source = [fed_messages(inbox.items(i), r) for i, r in enumerate(results)]
    return results, _build(per_source, results, opts, ship)


def _shards(paths: list[str], opts: Options) -> int:
    """How many Call-ID shards to split the analysis into (1: not split)."""
    if opts.split is False or opts.jobs == 1 or opts.engine != "local":
        return 1
    if opts.keep_messages or opts.keep_records:
        return 1  # per-message results stay in one process
    from sipflow.engine.local import is_log

    if any(p == "-" or is_log(p) for p in paths):
        return 1  # stdin cannot be read twice; logs tie channels to their own messages
    if opts.split is None:
        size = 0
        for p in paths:
            try:
                size += Path(p).stat().st_size
            except OSError:
                return 1  # the single-process path reports it
        if size < SPLIT_MIN_BYTES:
            return 1
    import os

    return max(1, opts.jobs if opts.jobs > 0 else (os.cpu_count() or 1))


def _split(
    paths: list[str], shards: int, opts: Options, tracker: ProgressTracker | None
) -> tuple[list[SourceResult], Built] | None:
    """Shards 1..n-1 in worker processes while this process runs shard 0, reading every
    packet and feeding the workers their messages (:mod:`sipflow.engine.shard`); then
    merged. None when a worker failed (killed, out of memory): the caller runs unsplit."""
    from sipflow.engine import shard
    from sipflow.engine.pool import FinishedRtp
    from sipflow.engine.shard import Workers, merge_results, plan

    plain = replace(opts, progress=None)  # callbacks do not travel to workers
    shard_plan = plan(shards, shard.FED_SHARE)  # shard 0 reads for all, then feeds them
    workers = Workers.start(paths, shard_plan[1:], plain)
    if workers is None:
        return None
    try:
        outbox = workers.outbox(shard_plan)
        results, per_source = _local_sources(paths, opts, shard_plan[0], outbox)
        if tracker is not None:
            per_source = tracker.attach(results, per_source)
        built = _build(per_source, results, opts)
        for r in results:  # while the workers end: RTP streams finished here, not after
            r.rtp = FinishedRtp(r.rtp)
            r.feed = None
        outputs = workers.outputs()
        if outputs is None:  # a worker died or failed: redo it in one process
            return None
    finally:
        workers.stop()
    for out in outputs:
        merge_results(results, out.sources)
        built.counts.merge(out.built.counts)
        built.calls.extend(out.built.calls)
        built.activity.merge(out.built.activity)
        built.findings.extend(out.built.findings)
    return results, built


def _media(
    results: list[SourceResult],
    calls: list[tuple[CallRecord, CallMedia, LegFacts]],
    paths: list[str],
) -> tuple[list[RtpStream], list[dict[str, Any]], list[Finding], list[list[Digit]]]:
    """RTP streams of every source, mapped to the calls whose SDP announced them; SRTP
    streams whose SDES keys the SDP showed are decrypted (a second read of their source,
    :mod:`sipflow.rtp.decrypt`); the RFC 4733 DTMF digits of each call's streams."""
    streams = [s for r in results for s in r.rtp.finish()]
    with_rtp = {i for i, r in enumerate(results) if r.rtp.counts["rtp"]}
    if not streams:
        return [], [], [], []
    from sipflow.rtp.decrypt import Srtp
    from sipflow.rtp.dtmf import calls_rtp_digits
    from sipflow.rtp.mapping import map_streams

    records, media = [c for c, _, _ in calls], [m for _, m, _ in calls]
    mapped, quality, found = map_streams(
        streams, records, media, with_rtp, Srtp(paths, reread_media)
    )
    digits, dtmf_found = calls_rtp_digits(mapped, media)
    return mapped, quality, found + dtmf_found, digits


def _media_extended(records: list[CallRecord], streams: list[RtpStream]) -> list[CallRecord]:
    if not streams:
        return records
    from sipflow.rtp.mapping import media_extended

    return media_extended(records, streams)


def _channel_events(results: list[SourceResult]) -> list[ChannelEvent]:
    """PBX channel events of every log, tied to Call-IDs where the log allows, in time order."""
    events: list[ChannelEvent] = []
    for r in results:
        if r.channel_events:
            from sipflow.ingest.pbxlog import link_channels

            events.extend(link_channels(r.channel_events, r.log_messages))
            r.log_messages.clear()
    events.sort(key=lambda e: (e.ts, e.source, e.line))
    return events


def _tls_keys(opts: Options) -> TlsKeys | None:
    """The TLS keys to decrypt with; an unusable key file raises InputError (a usage error)."""
    if not opts.tls_keylog and not opts.tls_keys:
        return None
    from sipflow.ingest.tls import TlsKeys

    return TlsKeys.load(opts.tls_keylog, opts.tls_keys)


def _keylog_findings(results: list[SourceResult]) -> list[Finding]:
    keys = results[0].tls_keys if results else None
    if keys is None:
        return []
    return [
        Finding("tls.keylog_line", Severity.INFO, f"key log line {line}: {why}")
        for line, why in keys.keylog.problems
    ]


def _guarded(path: str, source: int, result: SourceResult) -> Iterator[SipMessage | Tick]:
    """A source's messages; an unreadable source becomes a Finding, not an exception."""
    try:
        yield from source_messages(path, source, result)
    except InputError as exc:
        result.stats.skipped["unreadable"] += 1
        result.findings.append(Finding("ingest.unreadable", Severity.ERROR, f"{path}: {exc}"))
    except OSError as exc:
        result.stats.skipped["unreadable"] += 1
        msg = f"{path}: {exc.strerror or exc}"
        result.findings.append(Finding("ingest.unreadable", Severity.ERROR, msg))


def _take(
    out: BuilderOutput,
    calls: list[tuple[CallRecord, CallMedia, LegFacts]],
    activity: ActivitySummary,
    findings: list[Finding],
    keep_records: bool,
) -> None:
    """File what the builder released: each call with its SDP negotiation judged now, while
    its messages are still at hand (RFC 3264 checks in ``checks/sdp.py``)."""
    for call in out.calls:
        media = media_for_call(call)
        findings.extend(media.findings)
        facts = facts_of(call, media)  # what leg correlation needs, before the messages go
        if not keep_records:  # the summary only: drop the messages the records hold
            call = replace(call, dialogs=(), transactions=())
        calls.append((call, media, facts))
    for tx in out.activity:
        activity.add(tx)
    findings.extend(out.findings)


@dataclass(frozen=True)
class ConvertResult:
    """What ``convert`` wrote: messages, packets, the placeholder map and what it changed."""

    messages: int
    packets: int
    mapping: dict[str, str]
    stream_written_as_udp: int
    mapping_path: str | None


def convert(sources: Iterable[str | Path], output: str | Path) -> ConvertResult:
    """Write the SIP messages of logs (or captures) to a classic pcap Wireshark opens.

    Placeholder addresses (``caller_ip``) become documentation addresses (RFC 5737/3849);
    the mapping is written beside the pcap as ``<output>.addresses.json``.
    """
    import json

    from sipflow.ingest.pcapwrite import write_pcap

    trace = analyze(sources, Options(keep_messages=True, keep_records=False))
    counts: Counter[str] = Counter()
    mapping = write_pcap(str(output), trace.message_list, {}, counts)
    side = None
    if mapping:
        side = f"{output}.addresses.json"
        Path(side).write_text(json.dumps(mapping, indent=2, sort_keys=True) + "\n")
    return ConvertResult(
        len(trace.message_list),
        counts["packets"],
        mapping,
        counts["stream_written_as_udp"],
        side,
    )


def export_audio(
    sources: Iterable[str | Path],
    call_id: str,
    out_dir: str | Path,
    options: Options | None = None,
) -> list[Path]:
    """One WAV per G.711 stream of the call with ``call_id`` (silence where packets were lost;
    SRTP decrypted when the SDP showed its SDES keys). ``options`` carries e.g. the TLS keys
    that reveal that SDP.

    Raises KeyError when no call has that Call-ID.
    """
    paths = expand_paths(sources)
    opts = replace(options or Options(), keep_messages=False, keep_records=False)
    trace = analyze(paths, opts)
    index = next((i for i, c in enumerate(trace.call_records) if call_id in c.call_ids), None)
    if index is None:
        raise KeyError(call_id)
    written: list[Path] = []
    for source, path in enumerate(paths):
        streams = [s for s in trace.rtp_stream_list if s.call == index and s.source == source]
        if streams:
            written += write_stream_audio(path, streams, out_dir)
    return written


def decode_audio(path: str, streams: list[RtpStream]) -> dict[int, Any]:
    """Decoded G.711 samples (int16 arrays) per ``RtpStream.id`` of ``streams``, read from
    the capture ``path`` a second time (SRTP decrypted with the keys the SRTP stage found)."""
    from sipflow.rtp.audio import AudioSink

    sink = AudioSink(streams)
    reread_media(path, 0, sink)
    return sink.samples()


def write_stream_audio(path: str, streams: list[RtpStream], out_dir: str | Path) -> list[Path]:
    """One WAV per G.711 stream of ``streams`` (e.g. one call's), named
    ``<call>-<direction>-<ssrc>.wav``; streams with no G.711 packet are left out."""
    from sipflow.report.wav import write_streams

    return write_streams(streams, decode_audio(path, streams), out_dir)
