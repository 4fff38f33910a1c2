"""Which log format a file is, from its first bytes.

How this works: the first 64 KiB are decoded and searched for the line forms each reader
understands, most specific first (a trace line that carries whole messages beats a
log-prefix style). ``None`` means "not a log we read": the caller treats the file as a
capture. Binary data (a NUL byte, or pcap/pcapng magic) is never a log.
"""

from __future__ import annotations

import re

_PCAP_MAGIC = (b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4", b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d")
_PCAPNG_MAGIC = b"\x0a\x0d\x0d\x0a"
_GZIP_MAGIC = b"\x1f\x8b"

# (format, evidence), tried in order; the first whose pattern occurs wins.
_RULES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("freeswitch", re.compile(r"\b(?:recv|send) \d+ bytes (?:from|to) [a-zA-Z]+/\[")),
    (
        "asterisk-pjsip",
        re.compile(r"<--- (?:Received|Transmitting) SIP (?:request|response) \(\d+ bytes\)"),
    ),
    (
        "asterisk-chansip",
        re.compile(
            r"<--- SIP read from |(?:<--- |^)(?:Reliably )?Transmitting \((?:no )?NAT\)", re.M
        ),
    ),
    ("ngrep", re.compile(r"^[UT] (?:\S+ \S+ |\+\S+ )?\S+:\d+ -> \S+:\d+", re.M)),
    ("avaya-ipo", re.compile(r"^\s*\d+mS SIP (?:Rx|Tx): ", re.M)),
    ("blink", re.compile(r"^\S+ -\(SIP over [A-Za-z]+\)-> \S+", re.M)),
    ("pjsip", re.compile(r"\b(?:RX|TX) \d+ bytes (?:Request|Response) msg ")),
    (
        "freeswitch",
        re.compile(
            r"\[(?:DEBUG|INFO|NOTICE|WARNING|ERR|CRIT|ALERT|CONSOLE)\] [\w.]+\.c:\d+ |"
            r"New Channel sofia/|State Change CS_[A-Z_]+ -(?:>|&gt;) CS_|"
            r"entering state \[\w+\]\[\d+\]"
        ),
    ),
    (
        "asterisk",
        re.compile(
            r"^\[[^\]]*\d\d:\d\d:\d\d[^\]]*\] (?:VERBOSE|DEBUG|NOTICE|WARNING|ERROR)\[\d+\]|"
            r"\"logmsg\":\{\"location\"|Executing \[[^\]]+\] \w+\(\"",
            re.M,
        ),
    ),
    (
        "kamailio",
        re.compile(
            r"<script>: |\b(?:kamailio|opensips)\b[^\n]*?\b(?:DEBUG|INFO|NOTICE|WARNING|ERROR|DBG|"
            r"ERR|CRITICAL|CRIT)\b:|^\s*\d+\(\d+\) (?:DEBUG|INFO|NOTICE|WARNING|ERROR): ",
            re.M,
        ),
    ),
    (
        "sip-text",
        re.compile(
            r"^[ \t]*(?:[A-Z]+ \S+ SIP/2\.0|SIP/2\.0 [1-6]\d\d\b).*\n[ \t]*"
            r"(?i:Via|v|Call-ID|i|From|f|To|t|CSeq|Max-Forwards)[ \t]*:",
            re.M,
        ),
    ),
)


def detect(head: bytes) -> str | None:
    """The format name of a log from its first bytes (up to 64 KiB), or None."""
    head = head[:65536]
    if head[:4] in _PCAP_MAGIC or head[:4] == _PCAPNG_MAGIC or head[:2] == _GZIP_MAGIC:
        return None
    if b"\x00" in head:
        return None
    text = head.decode("utf-8", "replace").replace("\r\n", "\n")
    for name, pattern in _RULES:
        if pattern.search(text):
            return name
    return None
