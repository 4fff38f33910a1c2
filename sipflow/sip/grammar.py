"""RFC 3261 §25 ABNF pieces as compiled regular expressions.

How this works: each production sipflow needs is written once here as a regex, with the
ABNF it implements quoted in the comment above it (RFC 3261 §25.1 unless noted). Parsers
in :mod:`sipflow.sip.message` and :mod:`sipflow.sip.uri` use these to decide what is
well-formed; they work on ``str`` decoded with ``surrogateescape``, so any byte survives.
Character classes are spelled out (``[0-9]``, not ``\\d``) so Unicode digits never match.
Where the grammar is deliberately loosened for real traffic, the comment says so.
"""

from __future__ import annotations

import re

# alphanum = ALPHA / DIGIT
_ALPHANUM = r"A-Za-z0-9"

# token = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~" )
TOKEN = rf"[{_ALPHANUM}\-.!%*_+`'~]+"
token = re.compile(TOKEN)

# Method = INVITEm / ACKm / OPTIONSm / BYEm / CANCELm / REGISTERm / extension-method
# extension-method = token            (methods are case-sensitive, §7.1)
method = re.compile(TOKEN)

# SIP-Version = "SIP" "/" 1*DIGIT "." 1*DIGIT
SIP_VERSION = r"SIP/[0-9]+\.[0-9]+"
sip_version = re.compile(SIP_VERSION)

# Request-Line = Method SP Request-URI SP SIP-Version CRLF
# (Request-URI = SIP-URI / SIPS-URI / absoluteURI: no whitespace; checked by parse_uri)
request_line = re.compile(rf"({TOKEN}) ([^ \t]+) ({SIP_VERSION})")

# Status-Line = SIP-Version SP Status-Code SP Reason-Phrase CRLF
# Status-Code = 3DIGIT ; Reason-Phrase = *(reserved / unreserved / escaped / UTF8-NONASCII
#               / UTF8-CONT / SP / HTAB)
status_line = re.compile(rf"({SIP_VERSION}) ([0-9]{{3}}) (.*)", re.DOTALL)

# message-header = field-name HCOLON field-value ; HCOLON = *( SP / HTAB ) ":" SWS
# header-name = token
header_name = re.compile(TOKEN)

# LWS = [*WSP CRLF] 1*WSP ; SWS = [LWS]   (after unfolding, LWS is plain SP/HTAB)
LWS = r"[ \t]+"
SWS = r"[ \t]*"

# quoted-string = SWS DQUOTE *(qdtext / quoted-pair ) DQUOTE
# qdtext = LWS / %x21 / %x23-5B / %x5D-7E / UTF8-NONASCII
# quoted-pair = "\" (%x00-09 / %x0B-0C / %x0E-7F)
QUOTED_STRING = r'"(?:[^"\\\r\n]|\\[^\r\n])*"'
quoted_string = re.compile(QUOTED_STRING)

# IPv4address = 1*3DIGIT "." 1*3DIGIT "." 1*3DIGIT "." 1*3DIGIT
IPV4 = r"[0-9]{1,3}(?:\.[0-9]{1,3}){3}"
ipv4 = re.compile(IPV4)

# IPv6reference = "[" IPv6address "]"
# IPv6address = hexpart [ ":" IPv4address ] ; hexpart = hexseq / hexseq "::" [ hexseq ] / ...
# (the hex/colon/dot shape is checked here; ipaddress validates the rest where it matters)
IPV6 = r"[0-9A-Fa-f:]*:[0-9A-Fa-f:.]*"
IPV6_REFERENCE = rf"\[{IPV6}\]"
ipv6_reference = re.compile(IPV6_REFERENCE)

# hostname = *( domainlabel "." ) toplabel [ "." ]
# domainlabel = alphanum / alphanum *( alphanum / "-" ) alphanum
# (loosened: "_" is accepted, as deployed DNS names and SIPp hosts use it)
HOSTNAME = rf"[{_ALPHANUM}_](?:[{_ALPHANUM}_\-.]*[{_ALPHANUM}_.])?"

# host = hostname / IPv4address / IPv6reference
HOST = rf"(?:{IPV6_REFERENCE}|{HOSTNAME})"
host = re.compile(HOST)

# port = 1*DIGIT ; hostport = host [ ":" port ]
hostport = re.compile(rf"({HOST})(?::([0-9]+))?")

# escaped = "%" HEXDIG HEXDIG
ESCAPED = r"%[0-9A-Fa-f]{2}"
_UNRESERVED = rf"{_ALPHANUM}\-_.!~*'()"

# user = 1*( unreserved / escaped / user-unreserved )
# user-unreserved = "&" / "=" / "+" / "$" / "," / ";" / "?" / "/"
user = re.compile(rf"(?:[{_UNRESERVED}&=+$,;?/]|{ESCAPED})+")

# password = *( unreserved / escaped / "&" / "=" / "+" / "$" / "," )
password = re.compile(rf"(?:[{_UNRESERVED}&=+$,]|{ESCAPED})*")

# SIP-URI = "sip:" [ userinfo ] hostport uri-parameters [ headers ]
# SIPS-URI = "sips:" [ userinfo ] hostport uri-parameters [ headers ]
# userinfo = ( user / telephone-subscriber ) [ ":" password ] "@"
# ("@" cannot appear unescaped in userinfo, headers or parameters, so the last "@" ends it)
sip_uri = re.compile(
    rf"(?P<scheme>[Ss][Ii][Pp][Ss]?):(?:(?P<userinfo>[^@]*)@)?(?P<host>{HOST})"
    r"(?::(?P<port>[0-9]*))?(?P<params>;[^?]*)?(?:\?(?P<headers>.*))?",
    re.DOTALL,
)

# uri-parameter = transport-param / user-param / method-param / ttl-param / maddr-param
#                 / lr-param / other-param
# other-param = pname [ "=" pvalue ] ; pname = 1*paramchar ; pvalue = 1*paramchar
# paramchar = param-unreserved / unreserved / escaped
# param-unreserved = "[" / "]" / "/" / ":" / "&" / "+" / "$"
PARAMCHARS = rf"(?:[{_UNRESERVED}\[\]/:&+$]|{ESCAPED})+"
uri_param = re.compile(rf"({PARAMCHARS})(?:=({PARAMCHARS}))?")

# header = hname "=" hvalue ; hname = 1*( hnv-unreserved / unreserved / escaped )
# hvalue = *( hnv-unreserved / unreserved / escaped )
# hnv-unreserved = "[" / "]" / "/" / "?" / ":" / "+" / "$"
HNV = rf"(?:[{_UNRESERVED}\[\]/?:+$]|{ESCAPED})"
uri_header = re.compile(rf"({HNV}+)=({HNV}*)")

# absoluteURI = scheme ":" ( hier-part / opaque-part ) ;
# scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )
SCHEME = r"[A-Za-z][A-Za-z0-9+\-.]*"
absolute_uri = re.compile(rf"({SCHEME}):([^ \t\r\n]+)")

# generic-param = token [ EQUAL gen-value ] ; gen-value = token / host / quoted-string
# EQUAL = SWS "=" SWS
# (plus a bare IPv6address, which via-received allows: "received" EQUAL (IPv4address /
# IPv6address), §25.1 via-received)
generic_param = re.compile(
    rf"({TOKEN})(?:{SWS}={SWS}({TOKEN}|{HOST}|{IPV6}|{QUOTED_STRING}))?", re.DOTALL
)

# via-parm = sent-protocol LWS sent-by *( SEMI via-params )
# sent-protocol = protocol-name SLASH protocol-version SLASH transport
# SLASH = SWS "/" SWS ; sent-by = host [ COLON port ] ; COLON = SWS ":" SWS
via_parm = re.compile(
    rf"({TOKEN}){SWS}/{SWS}({TOKEN}){SWS}/{SWS}({TOKEN}){LWS}({HOST})"
    rf"(?:{SWS}:{SWS}([0-9]+))?{SWS}(.*)",
    re.DOTALL,
)

# display-name = *(token LWS) / quoted-string
display_tokens = re.compile(rf"{TOKEN}(?:{LWS}{TOKEN})*")

# callid = word [ "@" word ]
# word = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~" / "(" / ")"
#        / "<" / ">" / ":" / "\" / DQUOTE / "/" / "[" / "]" / "?" / "{" / "}" )
WORD = rf"[{_ALPHANUM}\-.!%*_+`'~()<>:\\\"/\[\]?{{}}]+"
call_id = re.compile(rf"{WORD}(?:@{WORD})?")

# CSeq = "CSeq" HCOLON 1*DIGIT LWS Method
cseq = re.compile(rf"([0-9]+){LWS}({TOKEN})")

# Max-Forwards = "Max-Forwards" HCOLON 1*DIGIT ; Content-Length = ... HCOLON 1*DIGIT
# delta-seconds = 1*DIGIT
digits = re.compile(r"[0-9]+")

# rfc1123-date = wkday "," SP date1 SP time SP "GMT"     (§20.17, only GMT is allowed)
# date1 = 2DIGIT SP month SP 4DIGIT ; time = 2DIGIT ":" 2DIGIT ":" 2DIGIT
rfc1123_date = re.compile(
    r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), [0-9]{2} "
    r"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) [0-9]{4} "
    r"[0-9]{2}:[0-9]{2}:[0-9]{2} GMT"
)

# --- whole-value forms -------------------------------------------------------------------
# One regex per structured value, so the common well-formed case is checked with a single
# match; the piecewise parsers above explain what is wrong when it fails.

# SIP-URI / SIPS-URI, every component checked (userinfo, hostport, uri-parameters, headers)
SIP_URI_FULL = (
    rf"(?:[Ss][Ii][Pp][Ss]?):(?:(?:[{_UNRESERVED}&=+$,;?/]|{ESCAPED})+"
    rf"(?::(?:[{_UNRESERVED}&=+$,]|{ESCAPED})*)?@)?{HOST}(?::[0-9]{{1,5}})?"
    rf"(?:;{PARAMCHARS}(?:={PARAMCHARS})?)*(?:\?{HNV}+={HNV}*(?:&{HNV}+={HNV}*)*)?"
)
sip_uri_full = re.compile(SIP_URI_FULL)

# *( SEMI generic-param ) with SEMI = SWS ";" SWS, EQUAL = SWS "=" SWS
GEN_VALUE = rf"(?:{TOKEN}|{HOST}|{IPV6}|{QUOTED_STRING})"
GENERIC_PARAMS = rf"(?:{SWS};{SWS}{TOKEN}(?:{SWS}={SWS}{GEN_VALUE})?)*{SWS}"

# via-parm = sent-protocol LWS sent-by *( SEMI via-params )
via_parm_full = re.compile(
    rf"({TOKEN}){SWS}/{SWS}({TOKEN}){SWS}/{SWS}({TOKEN}){LWS}({HOST})"
    rf"(?:{SWS}:{SWS}([0-9]{{1,5}}))?({GENERIC_PARAMS})"
)

# name-addr = [ display-name ] LAQUOT addr-spec RAQUOT ; LAQUOT = SWS "<" ; RAQUOT = ">" SWS
# (from-spec / to-spec / contact-param = ( name-addr / addr-spec ) *( SEMI params ))
name_addr_full = re.compile(
    rf"(?:({QUOTED_STRING})|({TOKEN}(?:{LWS}{TOKEN})*))?{SWS}<([^<>\s]+)>({GENERIC_PARAMS})"
)
# addr-spec = SIP-URI / SIPS-URI / absoluteURI ; with no ',', ';' or '?' (RFC 3261 §20.10)
addr_spec_full = re.compile(rf"({SCHEME}:[^<>\s;,?\"]+)({GENERIC_PARAMS})")
