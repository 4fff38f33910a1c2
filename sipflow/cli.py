"""The ``sipflow`` command. Each command parses options and makes one call into the library.

Exit codes of ``analyze``: 0 analysed; 2 usage error; 3 no source could be read;
4 some sources could not be read (the others were analysed).
"""

from __future__ import annotations

import enum
import sys
from pathlib import Path
from typing import Annotated

import typer

from sipflow import __version__

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Trace and explain SIP call flows from packet captures.",
)

EXIT_OK = 0
EXIT_NOTHING_READ = 3
EXIT_PARTIAL = 4


class Format(enum.Enum):
    table = "table"
    json = "json"
    csv = "csv"


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
) -> None:
    """Rebuild transactions, dialogs and calls; print a summary, the calls and findings.

    Exit code 0 when analysed, 3 when no source could be read, 4 when some could not.
    """
    from sipflow.api import Options
    from sipflow.api import analyze as run
    from sipflow.report.export import calls_csv, to_json
    from sipflow.report.text import render

    trace = run(files, Options(keep_messages=False, keep_records=False))
    doc = trace.to_dict()
    text = {Format.table: render, Format.json: to_json, Format.csv: calls_csv}[fmt](doc)
    if output is None:
        sys.stdout.write(text)
    else:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text, encoding="utf-8")
    for path in trace.unreadable:
        typer.echo(f"sipflow: could not read {path} (see findings)", err=True)
    if trace.unreadable:
        code = EXIT_NOTHING_READ if len(trace.unreadable) == len(trace.sources) else EXIT_PARTIAL
        raise typer.Exit(code)


@app.command()
def convert(
    files: Annotated[
        list[str], typer.Argument(help="PBX logs (FreeSWITCH, Asterisk, Kamailio, ...) or captures.")
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


def main() -> None:
    app()


if __name__ == "__main__":
    main()
