"""sipflow: trace and explain SIP call flows from captures and PBX logs.

Public API::

    import sipflow
    trace = sipflow.analyze(["call.pcap"])
    trace.calls          # pandas DataFrame, one row per call
    trace.to_dict()      # the JSON object of docs/json.md
"""

__version__ = "0.1.0"

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
