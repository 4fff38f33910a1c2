"""RTP payload types of RFC 3551 §6 (static table) and the clock rates jitter is measured in.

How this works: a static payload type (0-34) names its codec and clock rate; a dynamic one
(96-127) only means something through the SDP that announced it (``a=rtpmap``), so the
stream statistics measure jitter for a dynamic stream at each of :data:`CANDIDATE_CLOCKS`
and :mod:`sipflow.rtp.mapping` picks the one the SDP negotiated.
"""

from __future__ import annotations

# RFC 3551 §6 Table 4 (audio) and Table 5 (video): PT -> (encoding name, clock rate).
STATIC_PT: dict[int, tuple[str, int]] = {
    0: ("PCMU", 8000),
    3: ("GSM", 8000),
    4: ("G723", 8000),
    5: ("DVI4", 8000),
    6: ("DVI4", 16000),
    7: ("LPC", 8000),
    8: ("PCMA", 8000),
    9: ("G722", 8000),  # RFC 3551 §4.5.2: 8000 although sampled at 16 kHz
    10: ("L16", 44100),
    11: ("L16", 44100),
    12: ("QCELP", 8000),
    13: ("CN", 8000),
    14: ("MPA", 90000),
    15: ("G728", 8000),
    16: ("DVI4", 11025),
    17: ("DVI4", 22050),
    18: ("G729", 8000),
    25: ("CelB", 90000),
    26: ("JPEG", 90000),
    28: ("nv", 90000),
    31: ("H261", 90000),
    32: ("MPV", 90000),
    33: ("MP2T", 90000),
    34: ("H263", 90000),
}

# Clock rates tried for a stream whose first payload type is not in the static table;
# the first is the one reported while no SDP says otherwise (telephone-event, most
# narrow-band codecs), then wide-band, Opus/full-band, video.
CANDIDATE_CLOCKS: tuple[int, ...] = (8000, 16000, 48000, 90000)
DEFAULT_CLOCK = CANDIDATE_CLOCKS[0]


def static_clock(pt: int) -> int | None:
    """Clock rate of a static payload type, or None (dynamic or unassigned)."""
    entry = STATIC_PT.get(pt)
    return entry[1] if entry else None


def static_name(pt: int) -> str | None:
    entry = STATIC_PT.get(pt)
    return entry[0] if entry else None
