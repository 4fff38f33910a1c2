"""sipflow: trace and explain SIP call flows from captures and PBX logs.

Public API::

    import sipflow
    trace = sipflow.analyze(["call.pcap"])
    trace.calls          # pandas DataFrame, one row per call
    trace.to_dict()      # the JSON object of docs/json.md

Importing the package is cheap: each public name loads its module when first used (PEP
562), so ``sipflow --version``, ``--help`` and the commands that do not analyse (b2bua,
regen, live) do not pay for the analyser, and a whole-capture run does not load the
streaming engine.
"""

__version__ = "0.1.0"

from typing import TYPE_CHECKING as _TYPE_CHECKING

from sipflow.lazy import lazy_names as _lazy_names

if _TYPE_CHECKING:
    from sipflow.api import Options, analyze, analyze_stream
    from sipflow.engine.progress import ProgressEvent
    from sipflow.engine.stream import StreamOptions
    from sipflow.engine.stream_run import StreamResult
    from sipflow.errors import InputError, ParseError, SipflowError
    from sipflow.findings import Finding, Ref, Severity
    from sipflow.trace import Trace

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

# public name -> the module that defines it
_WHERE = {
    "Finding": "sipflow.findings",
    "InputError": "sipflow.errors",
    "Options": "sipflow.api",
    "ParseError": "sipflow.errors",
    "ProgressEvent": "sipflow.engine.progress",
    "Ref": "sipflow.findings",
    "Severity": "sipflow.findings",
    "SipflowError": "sipflow.errors",
    "StreamOptions": "sipflow.engine.stream",
    "StreamResult": "sipflow.engine.stream_run",
    "Trace": "sipflow.trace",
    "analyze": "sipflow.api",
    "analyze_stream": "sipflow.api",
}


__getattr__ = _lazy_names(__name__, globals(), _WHERE)


def __dir__() -> list[str]:
    return sorted({*globals(), *_WHERE})
