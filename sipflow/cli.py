"""The ``sipflow`` command. Each command parses options and makes one call into the library.

Exit codes of ``analyze``: 0 analysed; 2 usage error; 3 no source could be read;
4 some sources could not be read (the others were analysed).
"""

from __future__ import annotations

import enum
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from sipflow import __version__

if TYPE_CHECKING:
    from collections.abc import Callable

    from sipflow.api import Options
    from sipflow.trace import Trace

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Trace and explain SIP call flows from packet captures.",
)

EXIT_OK = 0
EXIT_NOTHING_READ = 3
EXIT_PARTIAL = 4
_R = TypeVar("_R")


class Format(enum.Enum):
    table = "table"
    json = "json"
    csv = "csv"


class Engine(enum.Enum):
    local = "local"
    dask = "dask"


TlsKeylogOption = Annotated[
    list[Path] | None,
    typer.Option("--tls-keylog", help="NSS key log (SSLKEYLOGFILE) to decrypt SIP over TLS."),
]
TlsKeyOption = Annotated[
    list[Path] | None,
    typer.Option("--tls-key", help="RSA server private key (PEM/DER), TLS <= 1.2 RSA."),
]


def _with_tls_keys(opts: Options, keylogs: list[Path] | None, keys: list[Path] | None) -> Options:
    """``opts`` with the --tls-keylog / --tls-key files (docs/tls.md)."""
    opts.tls_keylog = [str(p) for p in keylogs or ()]
    opts.tls_keys = [str(p) for p in keys or ()]
    return opts


def _version(value: bool) -> None:
    if value:
        typer.echo(f"sipflow {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    """Trace and explain SIP call flows from packet captures."""


@app.command()
def analyze(
    files: Annotated[
        list[str],
        typer.Argument(
            help="pcap / pcapng files (gzip-compressed too), directories of them, or - for stdin. "
            "Several files are merged on one timeline."
        ),
    ],
    fmt: Annotated[
        Format,
        typer.Option("--format", "-f", help="table (human), json (docs/json.md) or csv (calls)."),
    ] = Format.table,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write to this file instead of stdout.")
    ] = None,
    html: Annotated[
        Path | None,
        typer.Option(
            "--html", help="Also write the self-contained HTML report (ladders, KPIs) here."
        ),
    ] = None,
    jobs: Annotated[
        int,
        typer.Option(
            "--jobs",
            "-j",
            help="Processes (0: all cores): a capture of 16 MB or more is split by Call-ID;"
            " with --html, one worker per file (docs/scale.md).",
        ),
    ] = 0,
    engine: Annotated[
        Engine, typer.Option("--engine", help="local (this machine) or dask (docs/scale.md).")
    ] = Engine.local,
    scheduler: Annotated[
        str | None,
        typer.Option("--scheduler", help="Dask scheduler address for --engine dask."),
    ] = None,
    tls_keylog: TlsKeylogOption = None,
    tls_key: TlsKeyOption = None,
    log_year: Annotated[
        int | None,
        typer.Option(
            "--log-year",
            min=1971,
            max=9999,
            help="Year of PBX log times written without one (syslog 'Jan 22 13:35:21')."
            " Default: the year the log file was last modified.",
            show_default=False,
        ),
    ] = None,
    stream: Annotated[
        bool | None,
        typer.Option(
            "--stream/--no-stream",
            help="Write calls as they finish (json or csv): memory holds only"
            " the calls still open, whatever the capture's size (docs/scale.md, Streaming)."
            " Default: on for -f json/csv of 1 GiB of captures or more.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Rebuild transactions, dialogs and calls; print a summary, the calls and findings.

    Exit code 0 when analysed, 3 when no source could be read, 4 when some could not.
    """
    from sipflow.api import Options
    from sipflow.api import analyze as run
    from sipflow.gcpause import paused
    from sipflow.report.export import calls_csv, to_json
    from sipflow.report.progress_view import analysis_progress
    from sipflow.report.text import render

    renderers = {Format.table: render, Format.json: to_json, Format.csv: calls_csv}
    stored = _stored_document(files, html)
    if stored is not None:  # a store written by ``sipflow index``: no capture is read
        _emit(renderers[fmt](stored), output)
        return
    if stream is None:
        stream = _stream_by_size(files, fmt, html)
    if stream:
        _analyze_streaming(files, fmt, output, html, tls_keylog, tls_key, jobs, log_year)
        return
    keep = html is not None  # ladders need every message and transaction record
    opts = Options(keep_messages=keep, keep_records=keep, jobs=jobs, log_year=log_year)
    opts.engine, opts.scheduler = engine.value, scheduler
    _with_tls_keys(opts, tls_keylog, tls_key)
    # The analysis and its document are acyclic (sipflow.gcpause): the collector stays off
    # until the trace is freed, else its first pass walks all of it (0.04-0.06 s, load capture).
    with paused():
        with analysis_progress() as progress:  # a bar on stderr only when it is a terminal
            opts.progress = progress
            trace = _run_engine(run, files, opts)
        if html is not None:
            _write_html(trace, html)
        text = renderers[fmt](trace.to_dict())
        unreadable, sources = trace.unreadable, len(trace.sources)
        del trace
    _emit(text, output)
    for path in unreadable:
        typer.echo(f"sipflow: could not read {path} (see findings)", err=True)
    if unreadable:
        code = EXIT_NOTHING_READ if len(unreadable) == sources else EXIT_PARTIAL
        raise typer.Exit(code)


STREAM_MIN_BYTES = 1 << 30
"""From this much capture on, ``-f json``/``-f csv`` stream unless told ``--no-stream``: a
whole-capture run keeps about 24 KB per finished call to the end (docs/scale.md)."""


def _stream_by_size(files: list[str], fmt: Format, html: Path | None) -> bool:
    """Whether to stream when neither --stream nor --no-stream was given."""
    if fmt is Format.table or html is not None or "-" in files:
        return False
    from sipflow.api import expand_paths

    size = 0
    for path in expand_paths(files):
        try:
            size += Path(path).stat().st_size
        except OSError:
            continue  # reported by the analysis
    if size < STREAM_MIN_BYTES:
        return False
    typer.echo(
        f"sipflow: {size / 1e9:.1f} GB of captures: calls are written as they finish"
        " (--no-stream keeps them all to the end, sorted by start)",
        err=True,
    )
    return True


def _analyze_streaming(
    files: list[str],
    fmt: Format,
    output: Path | None,
    html: Path | None,
    tls_keylog: list[Path] | None,
    tls_key: list[Path] | None,
    jobs: int,
    log_year: int | None,
) -> None:
    """``analyze --stream``: rows written as calls finish (sipflow.engine.stream), split by
    Call-ID over ``jobs`` processes (0: all cores) when the captures are big enough."""
    from sipflow.api import Options, analyze_stream
    from sipflow.report.progress_view import analysis_progress
    from sipflow.report.stream_out import CsvRows, JsonRows

    if fmt is Format.table or html is not None:
        typer.echo("sipflow: --stream writes -f json or -f csv, without --html", err=True)
        raise typer.Exit(2)
    opts = Options(keep_messages=False, keep_records=False, jobs=jobs, log_year=log_year)
    _with_tls_keys(opts, tls_keylog, tls_key)
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
    out = sys.stdout if output is None else output.open("w", encoding="utf-8")
    try:
        sink = JsonRows(out) if fmt is Format.json else CsvRows(out)
        with analysis_progress() as progress:
            opts.progress = progress
            result = _run_engine(lambda f, o: analyze_stream(f, sink, o), files, opts)
        sink.close(result.tail)
    finally:
        if out is not sys.stdout:
            out.close()
    for path in result.unreadable:
        typer.echo(f"sipflow: could not read {path} (see findings)", err=True)
    if result.lost_shards:
        typer.echo("sipflow: a worker process died; its calls are missing (see findings)", err=True)
        raise typer.Exit(EXIT_PARTIAL)
    if result.unreadable:
        code = EXIT_NOTHING_READ if len(result.unreadable) == result.sources else EXIT_PARTIAL
        raise typer.Exit(code)


def _stored_document(files: list[str], html: Path | None) -> dict[str, Any] | None:
    """The analysis a ``sipflow index`` store holds, when ``files`` is one store."""
    if len(files) != 1 or not Path(files[0]).is_dir():
        return None
    from sipflow.store import is_store, read_document

    if not is_store(files[0]):
        return None
    if html is not None:
        typer.echo("sipflow: --html needs the captures, not a store", err=True)
        raise typer.Exit(2)
    return read_document(files[0])


def _run_engine(run: Callable[..., _R], files: list[str], opts: Options) -> _R:
    """``run`` with a clear message instead of a traceback when the engine cannot start."""
    from sipflow.errors import EngineError, InputError

    try:
        return run(files, opts)
    except (EngineError, InputError) as exc:  # a bad engine address or TLS key file
        typer.echo(f"sipflow: {exc}", err=True)
        raise typer.Exit(2) from None


@app.command()
def index(
    files: Annotated[
        list[str], typer.Argument(help="Captures, logs or directories of them (merged).")
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="Store directory to write.")],
    jobs: Annotated[
        int,
        typer.Option("--jobs", "-j", help="Worker processes for several files (0: all cores)."),
    ] = 0,
) -> None:
    """Analyse and write a Parquet store (messages ... findings, by day); docs/scale.md."""
    from sipflow.api import Options
    from sipflow.api import analyze as run
    from sipflow.report.progress_view import analysis_progress
    from sipflow.store import StoreError, write_store

    with analysis_progress() as progress:
        trace = run(files, Options(jobs=jobs, progress=progress))
    try:
        rows = write_store(trace, output)
    except StoreError as exc:
        typer.echo(f"sipflow: {exc}", err=True)
        raise typer.Exit(2) from None
    summary = ", ".join(f"{name} {n}" for name, n in rows.items())
    typer.echo(f"sipflow: wrote {output}: {summary}", err=True)
    if trace.unreadable:
        code = EXIT_NOTHING_READ if len(trace.unreadable) == len(trace.sources) else EXIT_PARTIAL
        raise typer.Exit(code)


@app.command()
def convert(
    files: Annotated[
        list[str],
        typer.Argument(help="PBX logs (FreeSWITCH, Asterisk, Kamailio, ...) or captures."),
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="The pcap to write.")],
) -> None:
    """Write the SIP messages of PBX logs to a pcap that Wireshark, tshark and sngrep open.

    Placeholder addresses in pasted logs become documentation addresses; the mapping is
    written to OUTPUT.addresses.json.
    """
    from sipflow.api import convert as run

    result = run(files, output)
    typer.echo(f"wrote {result.messages} SIP messages in {result.packets} packets to {output}")
    if result.stream_written_as_udp:
        typer.echo(
            f"{result.stream_written_as_udp} TCP/TLS messages whose body does not match their "
            "Content-Length were written as UDP, so each stays one message",
            err=True,
        )
    if result.mapping_path:
        typer.echo(f"placeholder addresses mapped in {result.mapping_path}")
    if result.messages == 0:
        raise typer.Exit(EXIT_NOTHING_READ)


def _write_html(trace: Trace, path: Path) -> None:
    from sipflow.reports_api import progress_bar, write_html

    with progress_bar("rendering ladders") as advance:
        size = write_html(trace, path, progress=advance)
    typer.echo(f"HTML report written to {path} ({size / 1e6:.1f} MB)", err=True)


class LadderFmt(enum.Enum):
    text = "text"
    svg = "svg"
    html = "html"
    mermaid = "mermaid"
    plantuml = "plantuml"


@app.command()
def ladder(
    files: Annotated[list[str], typer.Argument(help="Captures or PBX logs (merged).")],
    call: Annotated[
        str, typer.Option("--call", "-c", help="Call-ID (or a unique prefix) or call number.")
    ],
    fmt: Annotated[
        LadderFmt, typer.Option("--format", "-f", help="text, svg, html, mermaid or plantuml.")
    ] = LadderFmt.text,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write to this file instead of stdout.")
    ] = None,
) -> None:
    """Draw one call as a ladder diagram (terminal text, SVG, HTML, Mermaid, PlantUML)."""
    import os

    from sipflow.report.progress_view import analysis_progress
    from sipflow.reports_api import CallNotFound, LadderFormat, full_trace, render_ladder

    colour = output is None and sys.stdout.isatty() and not os.environ.get("NO_COLOR")
    with analysis_progress() as progress:
        trace = full_trace(files, progress)
    try:
        text = render_ladder(trace, call, LadderFormat(fmt.value), colour)
    except CallNotFound as exc:
        typer.echo(f"sipflow: {exc}", err=True)
        raise typer.Exit(2) from None
    _emit(text, output)


@app.command()
def cdr(
    files: Annotated[list[str], typer.Argument(help="Captures or PBX logs (merged).")],
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="cdr.csv, cdr.json or cdr.parquet (by suffix)."),
    ] = None,
    summary: Annotated[
        bool, typer.Option("--summary", help="Print KPIs: ASR, NER, ACD, PDD, codes, calls/min.")
    ] = False,
) -> None:
    """Write one CDR row per call; print KPIs with --summary."""
    from sipflow.report.progress_view import analysis_progress
    from sipflow.reports_api import cdr_summary, full_trace, write_cdr_file

    if output is None and not summary:
        typer.echo("sipflow: give --output FILE and/or --summary", err=True)
        raise typer.Exit(2)
    with analysis_progress() as progress:
        trace = full_trace(files, progress)
    lines = cdr_summary(trace) if summary else []
    if output is not None:
        try:
            result = write_cdr_file(trace, output)
        except (ValueError, ImportError) as exc:
            typer.echo(f"sipflow: {exc}", err=True)
            raise typer.Exit(2) from None
        typer.echo(f"{result.rows} calls written to {output} ({result.format})", err=True)
    if lines:
        sys.stdout.write("\n".join(lines) + "\n")


def _emit(text: str, output: Path | None) -> None:
    if output is None:
        sys.stdout.write(text)
    else:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text, encoding="utf-8")


@app.command()
def b2bua(
    config: Annotated[Path, typer.Option("--config", "-c", help="TOML config (docs/b2bua.md).")],
) -> None:
    """Run the reference B2BUA until Ctrl-C; writes the pcap, log and truth it is told to."""
    from sipflow.b2bua import run_b2bua

    raise typer.Exit(run_b2bua(config))


@app.command()
def regen(
    scenario: Annotated[str, typer.Argument(help="Scenario name (see --list).")] = "",
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="pcap to write (.log, .truth.json beside)."),
    ] = None,
    list_: Annotated[bool, typer.Option("--list", help="List the scenarios and exit.")] = False,
    seed: Annotated[int | None, typer.Option("--seed", help="Repeatable tags/Call-IDs.")] = None,
    calls: Annotated[
        int | None, typer.Option("--calls", help="Number of calls (load, traffic).")
    ] = None,
    rate: Annotated[
        float | None, typer.Option("--rate", help="Calls per second (load, traffic).")
    ] = None,
    x_cid: Annotated[
        bool, typer.Option("--x-cid", help="The B2BUA adds X-CID (A-leg Call-ID) to B legs.")
    ] = False,
) -> None:
    """Re-enact a call flow on loopback (built-in UAC + UAS + B2BUA) and write its evidence."""
    from sipflow.b2bua import regen as run
    from sipflow.b2bua import regen_list

    if list_ or not scenario:
        typer.echo(regen_list(), nl=False)
        return
    if output is None:
        typer.echo("sipflow regen: -o out.pcap is required", err=True)
        raise typer.Exit(2)
    raise typer.Exit(run(scenario, output, seed, calls, rate, x_cid))


@app.command()
def live(
    iface: Annotated[
        str | None, typer.Option("--interface", "-i", help="Interface to capture on, or any.")
    ] = None,
    bpf: Annotated[str, typer.Option("--filter", "-f", help="BPF capture filter.")] = "",
    write: Annotated[
        Path | None, typer.Option("--write", "-w", help="Write the capture (pcap) here.")
    ] = None,
    rotate: Annotated[
        str | None, typer.Option("--rotate", help="Start a new file at this size (e.g. 100M).")
    ] = None,
    hep_listen: Annotated[
        str | None, typer.Option("--hep-listen", help="Collect HEP on [ADDR]:PORT (UDP+TCP).")
    ] = None,
    json_lines: Annotated[
        bool, typer.Option("--json-lines", help="One JSON object per finished call.")
    ] = False,
    duration: Annotated[
        float | None, typer.Option("--duration", help="Stop after this many seconds.")
    ] = None,
    max_calls: Annotated[
        int | None, typer.Option("--max-calls", help="Stop after this many finished calls.")
    ] = None,
    retain: Annotated[
        int, typer.Option("--retain", min=0, help="Finished calls kept in the live table.")
    ] = 50,
) -> None:
    """Follow calls live (capture and/or HEP collector) until Ctrl-C; docs/live.md.

    Exit code 0 when stopped, 2 when the capture or listener cannot start."""
    from sipflow.engine.live import LiveOptions, run_live
    from sipflow.ingest.live import LiveError, parse_listen, parse_size
    from sipflow.report.live_view import make_view

    try:
        opts = LiveOptions(
            iface,
            bpf,
            str(write) if write else None,
            parse_size(rotate) if rotate else None,
            parse_listen(hep_listen) if hep_listen else None,
            duration,
            max_calls,
            retain,
        )
        run_live(opts, make_view(json_lines), lambda s: typer.echo(f"sipflow live: {s}", err=True))
    except LiveError as exc:
        typer.echo(f"sipflow live: {exc}", err=True)
        raise typer.Exit(2) from None


@app.command()
def audio(
    files: Annotated[list[str], typer.Argument(help="Captures holding the call's RTP.")],
    call: Annotated[str, typer.Option("--call", help="Call-ID of the call.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Directory for the WAV files.")],
    tls_keylog: TlsKeylogOption = None,
    tls_key: TlsKeyOption = None,
) -> None:
    """Write a WAV per direction of a call's G.711 (A-law, mu-law) audio; lost packets: silence.
    SRTP is decrypted when the call's SDP shows its SDES keys (docs/media-quality.md)."""
    from sipflow.api import Options, export_audio

    opts = _with_tls_keys(Options(), tls_keylog, tls_key)
    try:
        written = export_audio(files, call, output, opts)
    except KeyError:
        typer.echo(f"sipflow: no call with Call-ID {call}", err=True)
        raise typer.Exit(2) from None
    for path in written:
        typer.echo(str(path))
    if not written:
        typer.echo("sipflow: no G.711 RTP stream was mapped to that call", err=True)
        raise typer.Exit(EXIT_NOTHING_READ)


def main() -> None:
    """The ``sipflow`` console command: the app, then a quick exit.

    The interpreter's own exit frees every object still alive one by one (the analysis,
    the parser caches): 0.45 s of a 4.7 s ``analyze`` of the load capture. Once the app
    has returned, the output is written and the files closed, so when no other thread
    runs, the exit handlers run (temporary files, worker pools, logging) and the process
    ends without that teardown, with the code the app exited with."""
    try:
        app()
    except SystemExit as e:
        code = _exit_code(e.code)
    else:
        code = 0
    import threading

    if threading.active_count() > 1:
        sys.exit(code)  # the interpreter waits for them, as it always did
    import atexit
    import os

    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (| head): exit as Python does
            code = code or 120
    os._exit(code)


def _exit_code(code: object) -> int:
    """What ``sys.exit(code)`` would exit with: None 0, an int itself, anything else
    printed on stderr and 1."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


if __name__ == "__main__":
    main()
