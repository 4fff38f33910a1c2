"""sipflow: trace and explain SIP call flows from captures and PBX logs.

Public API::

    import sipflow
    trace = sipflow.analyze(["call.pcap"])
    trace.calls          # pandas DataFrame, one row per call
    trace.to_dict()      # the JSON object of docs/json.md
"""

__version__ = "0.1.0"

from typing import TYPE_CHECKING as _TYPE_CHECKING

from sipflow.api import Options, analyze, analyze_stream
from sipflow.engine.progress import ProgressEvent
from sipflow.errors import InputError, ParseError, SipflowError
from sipflow.findings import Finding, Ref, Severity
from sipflow.trace import Trace

if _TYPE_CHECKING:
    from sipflow.engine.stream import StreamOptions
    from sipflow.engine.stream_run import StreamResult

__all__ = [
    "Finding",
    "InputError",
    "Options",
    "ParseError",
    "ProgressEvent",
    "Ref",
    "Severity",
    "SipflowError",
    "StreamOptions",
    "StreamResult",
    "Trace",
    "__version__",
    "analyze",
    "analyze_stream",
]


def __getattr__(name: str) -> object:
    """The streaming run's types, imported when first used (PEP 562): a whole-capture run
    does not load the streaming engine."""
    if name == "StreamOptions":
        from sipflow.engine.stream import StreamOptions

        return StreamOptions
    if name == "StreamResult":
        from sipflow.engine.stream_run import StreamResult

        return StreamResult
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), "StreamOptions", "StreamResult"})
