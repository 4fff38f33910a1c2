"""What every agent on the sans-IO core does with its legs: build, send, answer, end.

How this works: :class:`Dialogs` holds the state a user agent keeps (transactions in
:class:`~sipflow.sip.live_tx.LiveTransactions`, legs by Call-ID and local tag, the
requests we sent and what waits for their answers, a heap of scheduled work) and the
steps every call takes whatever it is for: requests built from a leg's dialog state
(RFC 3261 §12.2.1.1), responses echoing the request (§8.2.6.2), client and server
transactions, INVITE to a route's target, the ACK for a 2xx (§13.2.2.4) and for a
failure (§17.1.1.3), CANCEL (§9.1), BYE, upstream digest retries (§22.2), hang-ups
and the end of a call, and the channel events the FreeSWITCH-style log is made of.
The B2BUA (:mod:`sipflow.b2bua.core`), its transfers (:mod:`sipflow.b2bua.transfer`)
and the built-in UAs (:mod:`sipflow.b2bua.ua`) decide *when*; nothing here reads a
clock or touches a socket: ``now`` (ns) comes in, :class:`Send` and
:class:`CallEvent` go out.
"""

from __future__ import annotations

import functools
import heapq
from collections.abc import Callable, Sized

from sipflow.b2bua import media
from sipflow.b2bua.config import Config, Route
from sipflow.b2bua.model import (
    Action,
    Call,
    CallEvent,
    EventKind,
    Ids,
    Leg,
    LegState,
    Send,
    Stats,
    Transfer,
    _Client,
    _hostport,
    _outcome,
    _parsed_uri,
)
from sipflow.errors import ParseError
from sipflow.ingest.types import Endpoint, Transport
from sipflow.sip import auth
from sipflow.sip.live_tx import LiveTransactions, Verdict
from sipflow.sip.message import SipRequest, SipResponse, parse_message
from sipflow.sip.transaction import MS, T1, TxKey, is_reliable, key_of
from sipflow.sip.uri import parse_name_addr

SECOND = 1000 * MS
LINGER = 64 * T1  # how long a finished call's dialogs still answer late messages
SDP = "application/sdp"


def sdp_body(msg: SipRequest | SipResponse) -> bytes:
    """The message body when it is SDP (RFC 3261 §20.15; no Content-Type with a body
    is taken as SDP, as the INVITEs of a lab often are)."""
    ctype = (msg.headers.get("content-type") or SDP).split(";", 1)[0].strip().lower()
    return msg.body if ctype == SDP else b""


class Dialogs:
    """Legs, transactions and the steps of a call; subclassed by the B2BUA and the UAs.
    Not thread-safe; one instance per event loop."""

    def __init__(self, config: Config, seed: int | None = None) -> None:
        self.config = config
        self.ids = Ids(seed if seed is not None else config.seed)
        self.txs: LiveTransactions[tuple[Endpoint, Transport]] = LiveTransactions()
        self.calls: dict[str, Call] = {}
        self.finished: list[Call] = []
        """Ended calls, for the truth file, unless :attr:`on_finished` takes them."""
        self.on_finished: Callable[[Call], None] | None = None
        """When set, each call is handed over as it ends and not kept (a long-running
        B2BUA streams its truth file this way: memory stays flat)."""
        self.stats = Stats()
        self._legs: dict[tuple[str, str], Leg] = {}  # (Call-ID, local tag) -> leg
        self._a_invites: dict[TxKey, Leg] = {}  # A-leg INVITE server tx -> leg
        self._clients: dict[TxKey, _Client] = {}
        self._later: list[tuple[int, int, Callable[[int], list[Action]]]] = []
        self._later_seq = 0

    # -- time ----------------------------------------------------------------------------

    def schedule(self, when: int, fn: Callable[[int], list[Action]]) -> None:
        """Run ``fn(now)`` at ``when`` (ns): hang-ups, ringing, no-answer timers."""
        self._later_seq += 1
        heapq.heappush(self._later, (when, self._later_seq, fn))

    def _run_later(self, now: int) -> list[Action]:
        out: list[Action] = []
        while self._later and self._later[0][0] <= now:
            _, _, fn = heapq.heappop(self._later)
            out += fn(now)
        return out

    def next_deadline(self) -> int | None:
        times = [c.deadline for c in self.calls.values() if c.deadline is not None]
        if self._later:
            times.append(self._later[0][0])
        tx = self.txs.next_deadline()
        if tx is not None:
            times.append(tx)
        return min(times) if times else None

    def sizes(self) -> dict[str, Sized]:
        """The containers that hold per-call state, for memory checks: all shrink back
        once calls ended and lingered (``finished`` only without :attr:`on_finished`)."""
        return {
            "calls": self.calls,
            "finished": self.finished,
            "legs": self._legs,
            "a_invites": self._a_invites,
            "clients": self._clients,
            "later": self._later,
            "transactions": self.txs,
        }

    # -- building messages -----------------------------------------------------------------

    def _local(self, transport: Transport) -> Endpoint:
        listen = self.config.listener(transport) or self.config.listen[0]
        return listen.endpoint

    def _send(self, data: bytes, dst: Endpoint, transport: Transport) -> Send:
        self.stats.sent += 1
        return Send(data, dst, transport)

    def _contact(self, transport: Transport, user: str = "b2bua") -> str:
        ep = self._local(transport)
        scheme = "sips" if transport is Transport.TLS else "sip"
        return f"<{scheme}:{user}@{ep};transport={transport.value.lower()}>"

    @staticmethod
    def _assemble(start: str, headers: list[tuple[str, str]], body: bytes, ctype: str) -> bytes:
        lines = [start] + [f"{k}: {v}" for k, v in headers]
        if body:
            lines.append(f"Content-Type: {ctype}")
        lines.append(f"Content-Length: {len(body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape") + body

    def _response(
        self,
        req: SipRequest,
        status: int,
        reason: str,
        to_tag: str | None = None,
        body: bytes = b"",
        extra: tuple[tuple[str, str], ...] = (),
        transport: Transport = Transport.UDP,
    ) -> bytes:
        """A response echoing Via, From, To, Call-ID, CSeq (RFC 3261 §8.2.6.2)."""
        h = req.headers
        headers = [("Via", v.value) for v in h if v.key == "via"]
        to = h.get("to") or ""
        if to_tag and req.to_tag is None:
            to = f"{to};tag={to_tag}"
        echo = (
            ("From", h.get("from")),
            ("To", to),
            ("Call-ID", req.call_id),
            ("CSeq", h.get("cseq")),
        )
        headers += [(k, v) for k, v in echo if v]  # §8.2.6.2; a missing one stays missing
        # RFC 3261 §13.3.1.1 / RFC 3515 §2.4.2 (RFC 6665 §4.2.1.1): a dialog-making 1xx/2xx
        # names the Contact of our side.
        if 100 < status < 300 and req.method in ("INVITE", "REFER"):
            headers.append(("Contact", self._contact(transport)))
        headers.append(("Server", self.config.name))
        headers += list(extra)
        return self._assemble(f"SIP/2.0 {status} {reason}", headers, body, SDP)

    def _request(
        self,
        leg: Leg,
        method: str,
        cseq: int,
        branch: str,
        body: bytes = b"",
        ctype: str = SDP,
        extra: tuple[tuple[str, str], ...] = (),
        uri: str | None = None,
    ) -> bytes:
        """A request on ``leg`` from its dialog state (RFC 3261 §12.2.1.1)."""
        local = self._local(leg.transport)
        t = leg.transport.value
        headers = [("Via", f"SIP/2.0/{t} {local};branch={branch};rport")]
        headers += [("Route", r) for r in leg.route_set]
        headers.append(("Max-Forwards", "70"))
        to = f"{leg.remote_uri};tag={leg.remote_tag}" if leg.remote_tag else leg.remote_uri
        headers += [("From", f"{leg.local_uri};tag={leg.local_tag}"), ("To", to)]
        headers += [("Call-ID", leg.call_id), ("CSeq", f"{cseq} {method}")]
        # RFC 3261 §8.1.1.8; RFC 6665 §4.1.2.1 / §4.2.2 (SUBSCRIBE, NOTIFY); RFC 3515 §2.4.1
        if method in ("INVITE", "UPDATE", "SUBSCRIBE", "NOTIFY", "REFER"):
            headers.append(("Contact", self._contact(leg.transport)))
        headers.append(("User-Agent", self.config.name))
        headers += list(extra)
        target = uri or leg.remote_target
        return self._assemble(f"{method} {target} SIP/2.0", headers, body, ctype)

    # -- transactions ------------------------------------------------------------------------

    def _client_send(self, leg: Leg, method: str, data: bytes, now: int, client: _Client) -> Send:
        msg = parse_message(data)
        key = key_of(msg)
        assert key is not None  # we built Via and CSeq
        self.txs.send_request(
            key, method, data, (leg.peer, leg.transport), is_reliable(leg.transport), now
        )
        self._clients[key] = client
        if method == "INVITE":  # the A leg keeps the caller's INVITE in ``invite``
            leg.invite_key, leg.invite_data = key, data
        return self._send(data, leg.peer, leg.transport)

    def _reply(
        self,
        req: SipRequest,
        status: int,
        reason: str,
        src: Endpoint,
        t: Transport,
        now: int,
        to_tag: str | None = None,
        extra: tuple[tuple[str, str], ...] = (),
    ) -> Send:
        """Answer ``req`` on its server transaction with a body-less response."""
        data = self._response(req, status, reason, to_tag, extra=extra, transport=t)
        return self._answer(req, data, status, src, t, now)

    def _answer(
        self, req: SipRequest, data: bytes, status: int, dst: Endpoint, t: Transport, now: int
    ) -> Send:
        key = key_of(req)
        if key is not None:
            self.txs.send_response(key, status, data, now)
        return self._send(data, dst, t)

    def _server_new(
        self, req: SipRequest, src: Endpoint, t: Transport, now: int
    ) -> tuple[bool, list[Action]]:
        """Run the server transaction; (new, resends)."""
        key = key_of(req)
        if key is None:
            return False, []
        verdict, resend = self.txs.receive_request(key, req.method, (src, t), is_reliable(t), now)
        out: list[Action] = [self._send(r.data, r.dst[0], r.dst[1]) for r in resend]
        return verdict is Verdict.NEW, out

    # -- bad input ---------------------------------------------------------------------------

    @staticmethod
    def _bad_request(msg: SipRequest) -> str:
        """Why a request cannot be processed (RFC 3261 §8.1.1 mandatory headers), or ""."""
        for header in ("via", "call-id", "cseq", "from", "to"):
            if msg.headers.get(header) is None:
                return f"Missing {header.title() if header != 'cseq' else 'CSeq'} header"
        if msg.cseq is None or msg.top_via is None or msg.from_ is None or msg.to is None:
            return "Malformed " + ("CSeq" if msg.cseq is None else "Via/From/To") + " header"
        if msg.cseq.method.upper() != msg.method.upper():
            return "CSeq method does not match"
        return ""

    def _reject_malformed(
        self, msg: SipRequest, why: str, src: Endpoint, transport: Transport
    ) -> list[Action]:
        """400 with the reason (RFC 3261 §8.2, §21.4.1); dropped if no Via to answer to."""
        if msg.method.upper() == "ACK" or msg.headers.get("via") is None:
            self.stats.drop("malformed-request")
            return []
        self.stats.drop("answered-400")
        return [self._send(self._response(msg, 400, why), src, transport)]

    # -- the B side: INVITE to a route's target ---------------------------------------------

    def _route_for(self, user: str) -> tuple[Route, str] | None:
        """The first route whose pattern matches ``user``, and its target URI."""
        for route in self.config.routes:
            target = route.target_for(user)
            if target is not None:
                return route, target
        return None

    def _ring_limit(self, route: Route) -> int:
        """How long (ns) a B-side INVITE may go unanswered: the route's timeout, else the
        B2BUA's ``no_answer_timeout``."""
        timeout = route.timeout_s
        return int((timeout if timeout is not None else self.config.no_answer_timeout_s) * SECOND)

    def _caller(self, call: Call) -> tuple[str, str]:
        """(user, shown display name) of the caller, for the From of a B-side INVITE."""
        a = call.a
        if a is None:
            return "b2bua", ""
        try:
            fa = parse_name_addr(a.remote_uri)
        except ParseError:
            return "b2bua", ""
        from_uri = _parsed_uri(fa.uri)
        user = (from_uri.user if from_uri else None) or "b2bua"
        shown = f'"{fa.display.strip(chr(34))}" ' if fa.display else ""
        return user, shown

    def _originate(
        self,
        call: Call,
        route: Route,
        target: str,
        body: bytes,
        now: int,
        referred: Transfer | None = None,
    ) -> tuple[Leg | None, list[Action]]:
        """A new B-side leg to ``target``: own Call-ID, tags, Via and Contact (topology
        hiding), the caller's user and display name, ``body`` (SDES offered when the route
        says SRTP), Referred-By when it is a transfer's; None when the target has no host."""
        dst = _hostport(target)
        if dst is None:
            return None, []
        t = route.transport
        local = self._local(t)
        user, shown = self._caller(call)
        b = Leg(
            uuid=self.ids.uuid(),
            call=call,
            role="b",
            channel=f"sofia/external/{target.split(':', 1)[-1].split(';')[0]}",
            transport=t,
            peer=dst,
            call_id=self.ids.token(20) + "@" + local.ip,
            local_tag=self.ids.token(),
            local_uri=f"{shown}<sip:{user}@{local}>",
            remote_uri=f"<{target}>",
            remote_target=target,
            route=route,
            referred=referred,
        )
        call.b_legs.append(b)
        self._legs[(b.call_id, b.local_tag)] = b
        out = self._events_new_b(b, now)
        if route.srtp and body:
            body, b.srtp_offer = media.offer_sdes(body, self.ids.bytes)
        b.offer = body
        return b, [*out, self._send_invite(b, body, now)]

    def _send_invite(
        self, b: Leg, body: bytes, now: int, extra: tuple[tuple[str, str], ...] = ()
    ) -> Send:
        call = b.call
        if self.config.x_cid and call.a is not None:
            extra = (*extra, ("X-CID", call.a.call_id))
        if b.referred is not None:  # RFC 3892 §3: the referee copies Referred-By
            extra = (*extra, ("Referred-By", b.referred.referred_by))
        data = self._request(b, "INVITE", b.cseq, self.ids.branch(), body, extra=extra)
        return self._client_send(b, "INVITE", data, now, _Client(b, "INVITE"))

    def _may_retry_auth(self, b: Leg, status: int) -> bool:
        route = b.route
        return status in (401, 407) and bool(route and route.username) and b.auth_tries < 2

    def _auth_retry(self, b: Leg, resp: SipResponse, now: int) -> list[Action]:
        """Re-send the INVITE with credentials (RFC 3261 §22.2); [] when we cannot."""
        route = b.route
        www = resp.status == 401
        value = resp.headers.get("www-authenticate" if www else "proxy-authenticate")
        if value is None or route is None or route.username is None:
            return []
        try:
            ch = auth.parse_challenge(value)
        except ParseError:
            return []
        b.auth_tries += 1
        b.cseq += 1
        b.provisional = False
        cred = auth.authorization(
            ch, route.username, route.password or "", "INVITE", b.remote_target, self.ids.token(16)
        )
        name = "Authorization" if www else "Proxy-Authorization"
        return [self._send_invite(b, b.offer, now, ((name, cred),))]

    def _b_dialog(self, b: Leg, resp: SipResponse) -> None:
        """Our side of the dialog a 2xx made (RFC 3261 §12.1.2)."""
        b.remote_tag = resp.to_tag
        if resp.contacts:
            b.remote_target = resp.contacts[0].uri
        b.route_set = tuple(reversed(resp.headers.get_all("record-route")))
        b.sdp = sdp_body(resp) or b.sdp

    # -- in-dialog requests we start ----------------------------------------------------------

    def _ack_2xx(self, leg: Leg, now: int) -> Send:
        """ACK for a 2xx: its own transaction, new branch (RFC 3261 §13.2.2.4)."""
        data = self._request(leg, "ACK", leg.cseq, self.ids.branch())
        leg.ack_data = data
        return self._send(data, leg.peer, leg.transport)

    def _ack_failure(self, leg: Leg, resp: SipResponse, now: int) -> list[Action]:
        """ACK for a non-2xx final: same branch, To from the response (RFC 3261 §17.1.1.3)."""
        inv = parse_message(leg.invite_data) if leg.invite_data else None
        key = key_of(resp)
        if inv is None or key is None:
            return []
        headers = [("Via", inv.headers.get("via") or "")] + [("Route", r) for r in leg.route_set]
        headers += [("Max-Forwards", "70"), ("From", inv.headers.get("from") or "")]
        headers += [("To", resp.headers.get("to") or ""), ("Call-ID", leg.call_id)]
        headers += [("CSeq", f"{leg.cseq} ACK"), ("User-Agent", self.config.name)]
        uri = inv.uri if isinstance(inv, SipRequest) else leg.remote_target
        data = self._assemble(f"ACK {uri} SIP/2.0", headers, b"", "")
        self.txs.ack_sent(key, data, now)
        return [self._send(data, leg.peer, leg.transport)]

    def _cancel_leg(self, b: Leg, now: int) -> list[Action]:
        """CANCEL our INVITE on ``b`` (RFC 3261 §9.1: only after a provisional response;
        before one, the caller sends it when the first provisional arrives)."""
        if b.invite_data == b"" or b.confirmed or b.state is LegState.HANGUP:
            return []
        if not b.provisional:
            return []
        inv = parse_message(b.invite_data)
        via = inv.headers.get("via") or ""
        headers = [("Via", via)] + [("Route", r) for r in b.route_set]
        headers += [("Max-Forwards", "70"), ("From", inv.headers.get("from") or "")]
        headers += [("To", inv.headers.get("to") or ""), ("Call-ID", b.call_id)]
        headers += [("CSeq", f"{b.cseq} CANCEL"), ("User-Agent", self.config.name)]
        uri = inv.uri if isinstance(inv, SipRequest) else b.remote_target
        data = self._assemble(f"CANCEL {uri} SIP/2.0", headers, b"", "")
        b.state = LegState.HANGUP
        return [self._client_send(b, "CANCEL", data, now, _Client(b, "CANCEL"))]

    def _reinvite(self, leg: Leg, body: bytes, now: int) -> Send:
        """Our own re-INVITE on a confirmed leg (RFC 3261 §14.1); its 2xx is ACKed."""
        leg.cseq += 1
        data = self._request(leg, "INVITE", leg.cseq, self.ids.branch(), body)
        return self._client_send(leg, "INVITE", data, now, _Client(leg, "INVITE", reinvite=True))

    def _on_reinvite_response(self, leg: Leg, resp: SipResponse, now: int) -> list[Action]:
        if resp.status < 200:
            return []
        if resp.status >= 300:
            return self._ack_failure(leg, resp, now)  # the session stays as it was (§14.1)
        leg.sdp = sdp_body(resp) or leg.sdp
        return [self._ack_2xx(leg, now)]

    def _bye(self, leg: Leg, now: int, cause: str = "NORMAL_CLEARING") -> list[Action]:
        leg.cseq += 1
        data = self._request(leg, "BYE", leg.cseq, self.ids.branch())
        out: list[Action] = [self._client_send(leg, "BYE", data, now, _Client(leg, "BYE"))]
        return out + self._hangup_leg(leg, cause, now)

    # -- ends ----------------------------------------------------------------------------------

    def _hangup_leg(self, leg: Leg, cause: str, now: int) -> list[Action]:
        if leg.state is LegState.HANGUP and leg.role == "a" and leg.call.done:
            return []
        old = leg.state
        leg.state = LegState.HANGUP
        out: list[Action] = (
            [self._ev(EventKind.CALLSTATE, leg, now, old.value, "HANGUP")]
            if old is not LegState.HANGUP
            else []
        )
        out.append(
            self._ev(
                EventKind.HANGUP,
                leg,
                now,
                "CS_EXECUTE" if leg.role == "a" else "CS_CONSUME_MEDIA",
                cause,
            )
        )
        return out

    def _end_call(self, call: Call, now: int) -> list[Action]:
        if call.done:
            return []
        call.done = True
        call.deadline = None
        call.end = now
        if call.outcome == "in-progress":
            call.outcome = _outcome(call.final_code, call.cancelled)
        self.calls.pop(call.uuid, None)
        if self.on_finished is not None:
            self.on_finished(call)
        else:
            self.finished.append(call)
        a = call.a
        out: list[Action] = []
        if a is not None:
            a.invite = None  # the parsed INVITE: nothing answers it any more
            out.append(self._ev(EventKind.CALL_END, a, now, new=call.outcome))
        self._linger(call, now)
        return out

    def _linger(self, call: Call, now: int) -> None:
        """Late retransmissions (BYE, 2xx, ACK) still find an ended call's dialogs for
        64*T1 (RFC 3261 §17.1.1.2); then they are forgotten."""
        self.schedule(now + LINGER, functools.partial(self._forget, call))

    def _forget(self, call: Call, now: int) -> list[Action]:
        """Drop a finished call's dialogs and kept messages; its summary stays in
        ``finished`` (or went to :attr:`on_finished`) for the truth file. A call handed
        over is also unlinked from its legs and transfers: they point at each other, and
        as a reference cycle it would wait for a full collection of the garbage
        collector instead of being freed here."""
        legs = call.legs()
        for leg in legs:
            self._legs.pop((leg.call_id, leg.local_tag), None)
            leg.invite, leg.invite_data, leg.ack_data = None, b"", b""
            leg.invite_key, leg.offer, leg.sdp = None, b"", b""
        if self.on_finished is not None:
            for leg in legs:
                leg.referred = None
            call.a = call.b = call.transfer = None
            call.b_legs.clear()
            call.transfers.clear()
        return []

    # -- events ----------------------------------------------------------------------------------

    def _ev(
        self, kind: EventKind, leg: Leg, now: int, old: str = "", new: str = "", detail: str = ""
    ) -> CallEvent:
        return CallEvent(kind, now, leg.call.uuid, leg.uuid, leg.channel, old, new, detail)

    def _events_new_a(self, a: Leg, now: int) -> list[Action]:
        out: list[Action] = [self._ev(EventKind.NEW_CHANNEL, a, now, detail=a.call_id)]
        for old, new in (
            ("CS_NEW", "CS_INIT"),
            ("CS_INIT", "CS_ROUTING"),
            ("CS_ROUTING", "CS_EXECUTE"),
        ):
            out.append(self._ev(EventKind.STATE, a, now, old, new))
        return out

    def _events_new_b(self, b: Leg, now: int) -> list[Action]:
        out: list[Action] = [self._ev(EventKind.NEW_CHANNEL, b, now, detail=b.call_id)]
        out.append(self._ev(EventKind.STATE, b, now, "CS_NEW", "CS_INIT"))
        out.append(self._ev(EventKind.STATE, b, now, "CS_INIT", "CS_CONSUME_MEDIA"))
        return out

    def _early(self, leg: Leg, resp: SipResponse, now: int) -> list[Action]:
        """A B-side leg's provisional: its early dialog's tag, and its channel state."""
        if resp.to_tag:
            leg.remote_tag = resp.to_tag
        return self._progress(leg, resp, now)

    def _progress(self, leg: Leg, resp: SipResponse, now: int) -> list[Action]:
        """RINGING, or EARLY when the provisional has SDP (early media)."""
        new = LegState.EARLY if resp.body else LegState.RINGING
        if leg.state is new or leg.state not in (LegState.DOWN, LegState.RINGING):
            return []
        out: list[Action] = [self._ev(EventKind.CALLSTATE, leg, now, leg.state.value, new.value)]
        leg.state = new
        return out

    def _answered(self, leg: Leg, now: int) -> list[Action]:
        out: list[Action] = [self._ev(EventKind.ANSWER, leg, now)]
        out.append(self._ev(EventKind.CALLSTATE, leg, now, leg.state.value, "ACTIVE"))
        leg.state = LegState.ACTIVE
        return out
