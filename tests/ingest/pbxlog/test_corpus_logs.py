"""Every log of ../shared/corpus/logs is read without a traceback, with the expected count.

Expected message counts were established independently of the reader, per file, with

    grep -cE '(: |^[[:space:]]*)([A-Z]+ [^ ]+ SIP/2\\.0\\.?[[:space:]]*$|'\\
'SIP/2\\.0 [1-6][0-9][0-9]( |\\.|$))'

(SIP start lines at a line start or right after a ``: `` log prefix; ``\\.`` allows ngrep's
CR dot), then checked by eye where the two differ: issue_kamailio_1257 has one hit inside a
``_reply_light(): ... buf=0x..: SIP/2.0 100 trying -...`` debug line, which only describes
a reply and carries no message, so 0 is expected. The trace-line counts (second number) are
``grep -c`` of each format's trace line (FreeSWITCH ``bytes (from|to)``, Asterisk ``<---``
headers, pjsip ``RX|TX N bytes``, Blink ``-(SIP over``, IPO ``mS SIP (Rx|Tx)``, ngrep ``^U ``).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sipflow.findings import Finding
from sipflow.ingest.pbxlog import ChannelEvent, EventKind, LogMessage, detect, read_log
from sipflow.ingest.types import SourceStats
from sipflow.sip.message import parse_message

LOGS = Path(__file__).resolve().parents[3] / ".." / "shared" / "corpus" / "logs"

# file: (format, SIP messages, of which after a trace line)
EXPECTED = {
    "asterisk18_full_debug_register_invite_ivr.log": ("asterisk", 0, 0),
    "asterisk18_full_json_format.log": ("asterisk", 0, 0),
    "asterisk_chansip_debug_subscribe_presence.log": ("asterisk-chansip", 6, 6),
    "asterisk_chansip_presencestate_notify.log": ("asterisk-chansip", 2, 2),
    "asterisk_pjsip_logger_invite_sipp_single.log": ("asterisk-pjsip", 1, 1),
    "avaya_IPO_Monitor_Detail_Out.log": ("avaya-ipo", 34, 34),
    "avaya_ade_b179_syslog.log": ("pjsip", 28, 28),
    "avaya_b199-iso-SyslogCatchAll.log": ("pjsip", 16, 16),
    "blink_sip_client_trace_tls_publish_invite_msrp.log": ("blink", 2373, 2373),
    "freeswitch110_debug_internal_calls_scanners.log": ("freeswitch", 0, 0),
    "freeswitch16_siptrace_gateway_register_loop.log": ("freeswitch", 984, 984),
    "issues/issue_asterisk_1735_pjsip_bye_481_debug.log": ("asterisk", 1, 0),
    "issues/issue_drachtio_server_195_freeswitch_siptrace_tcp_invite.log": ("freeswitch", 1, 1),
    "issues/issue_drachtio_siprec_49_broadworks_siprec_invite.log": ("freeswitch", 1, 1),
    "issues/issue_drachtio_srf_110_sofia_nta_tcp_invite.log": ("freeswitch", 1, 1),
    "issues/issue_freeswitch_1147_siptrace_ws_invite_jssip.log": ("freeswitch", 1, 1),
    "issues/issue_freeswitch_1509_outbound_originate_uuid_prefixed.log": ("freeswitch", 0, 0),
    "issues/issue_freeswitch_2593_reinvite_trusted_profile_states.log": ("freeswitch", 0, 0),
    "issues/issue_kamailio_1257_xlog_script_rtpproxy.log": ("kamailio", 0, 0),
    "issues/issue_kamailio_1395_debug_parse_invite.log": ("kamailio", 0, 0),
    "issues/issue_kamailio_2436_debug_reinvite_reply_no_transaction.log": ("kamailio", 0, 0),
    "issues/issue_linphone_android_567_freeswitch_nua_debug_calling.log": ("freeswitch", 0, 0),
    "issues/issue_opensips_3109_debug_b2b_invite.log": ("kamailio", 0, 0),
    "issues/issue_opensips_954_ngrep_reinvite_via_proxy.log": ("ngrep", 2, 2),
    "issues/issue_usecallmanagernz_39_chansip_debug_tcp_notify_200.log": ("asterisk-chansip", 3, 3),
}


def _logs() -> Path:
    if not LOGS.is_dir():
        pytest.skip(f"{LOGS} is absent (shared corpus not available)")
    return LOGS


def test_every_corpus_log_is_listed() -> None:
    root = _logs()
    found = {str(p.relative_to(root)) for p in root.rglob("*.log")}
    assert found == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_corpus_log(name: str) -> None:
    path = _logs() / name
    fmt, count, traced = EXPECTED[name]
    assert detect(path.read_bytes()[:65536]) == fmt
    stats, findings = SourceStats(str(path)), []
    items = list(read_log(str(path), 0, stats, findings))
    msgs = [i for i in items if isinstance(i, LogMessage)]
    assert len(msgs) == count
    assert sum(1 for m in msgs if m.origin.src is not None) == traced
    for m in msgs:
        parse_message(m.data, m.origin)  # never raises: the reader only frames start lines
    assert stats.frames == path.read_bytes().count(b"\n") + (not path.read_bytes().endswith(b"\n"))
    times = [i.origin.ts if isinstance(i, LogMessage) else i.ts for i in items]
    assert times == sorted(times)
    assert all(isinstance(f, Finding) for f in findings)


def test_freeswitch_110_channels_match_grep() -> None:
    """New Channel / Hangup counts equal ``grep -c`` of those lines."""
    path = _logs() / "freeswitch110_debug_internal_calls_scanners.log"
    text = path.read_text("utf-8", "replace")
    events = [
        i for i in read_log(str(path), 0, SourceStats(str(path)), []) if isinstance(i, ChannelEvent)
    ]
    new = [e for e in events if e.kind is EventKind.NEW_CHANNEL]
    assert len(new) == sum("New Channel " in line for line in text.splitlines())
    assert all(e.uuid and e.channel.startswith("sofia/") for e in new)
    changes = [e for e in events if e.kind is EventKind.STATE_CHANGE]
    assert len(changes) == sum(
        " State Change CS_" in line and " -> " in line for line in text.splitlines()
    )


def test_avaya_ipo_wrapped_headers_are_joined() -> None:
    """IP Office's monitor cuts lines at 255 characters and goes on at column 0; the cut
    Proxy-Authorization headers come out whole (seven in this log, none malformed)."""
    path = _logs() / "avaya_IPO_Monitor_Detail_Out.log"
    raw = path.read_text("utf-8").splitlines()
    long = [i for i, line in enumerate(raw) if len(line) == 255]
    # the rest of a cut monitor line (not a message line) is a new record: "3309494088mS ..."
    cut = [i for i in long if not re.match(r"\d+mS ", raw[i + 1])]
    assert len(long) == 10 and len(cut) == 7
    assert all(raw[i + 1][:1] not in (" ", "") for i in cut)
    expected = sorted((raw[i] + raw[i + 1]).strip() for i in cut)
    items = read_log(str(path), 0, SourceStats(str(path)), [])
    msgs = [parse_message(i.data, i.origin) for i in items if isinstance(i, LogMessage)]
    assert not any(m.problems for m in msgs)
    auth = sorted(
        f"Proxy-Authorization: {v}" for m in msgs for v in m.headers.get_all("Proxy-Authorization")
    )
    assert auth == expected
