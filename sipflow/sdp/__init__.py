"""SDP: a lossless model (RFC 8866), multipart bodies, offer/answer pairing (RFC 3264,
RFC 3261 §13) and SRTP keying (SDES RFC 4568, DTLS-SRTP RFC 5763/5764/8842). Sans-IO."""

from sipflow.sdp.model import Format, MediaSection, Sdp, parse_sdp, serialise
from sipflow.sdp.multipart import parse_multipart, sdp_body
from sipflow.sdp.offer_answer import Exchange, Party, Status, Tracking, message_sdp, track
from sipflow.sdp.srtp import CryptoAttr, Fingerprint, SetupRole, SrtpMethod, parse_crypto

__all__ = [
    "CryptoAttr",
    "Exchange",
    "Fingerprint",
    "Format",
    "MediaSection",
    "Party",
    "Sdp",
    "SetupRole",
    "SrtpMethod",
    "Status",
    "Tracking",
    "message_sdp",
    "parse_crypto",
    "parse_multipart",
    "parse_sdp",
    "sdp_body",
    "serialise",
    "track",
]
