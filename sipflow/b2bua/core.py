"""The sans-IO B2BUA: calls, legs, routing, upstream auth, timers, topology hiding.

How this works: :meth:`B2BUA.receive` takes one SIP message's bytes, where they came from,
the transport and ``now`` (ns), and returns actions: :class:`Send` (bytes to an address)
and :class:`CallEvent` (channel life, for the FreeSWITCH-style log and the truth file).
:meth:`B2BUA.expire` fires the timers due at ``now`` and :meth:`B2BUA.next_deadline`
names the next one, so the asyncio layer only moves bytes and arms one timer.

A call has an A leg (we are the UAS of the caller's INVITE) and a B leg (we are the UAC
of our own INVITE to the route's target). Each leg is its own dialog: own Call-ID, tags,
Via and Contact (topology hiding); nothing of one leg's headers reaches the other but
the caller's user part and display name, the body, and (when configured) ``X-CID``.
Transactions run in :class:`~sipflow.sip.transaction.LiveTransactions` (RFC 3261 §17);
requests inside a dialog are relayed leg to leg with their own CSeq, responses mapped
back. Requests handlers and B-leg INVITE response handlers are tables.
"""

from __future__ import annotations

import functools
import heapq
from collections.abc import Callable

from sipflow.b2bua import media
from sipflow.b2bua.config import Config
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
    _Client,
    _hostport,
    _outcome,
    _parsed_uri,
    _strip_tag,
    _uri_of,
)
from sipflow.errors import ParseError
from sipflow.ingest.types import Endpoint, Transport
from sipflow.sip import auth
from sipflow.sip.message import SipRequest, SipResponse, parse_message
from sipflow.sip.transaction import (
    MS,
    T1,
    LiveTransactions,
    Retransmit,
    TxEvent,
    TxKey,
    TxTerminated,
    Verdict,
    is_reliable,
    key_of,
)

__all__ = ["B2BUA", "Action", "Call", "CallEvent", "EventKind", "Leg", "LegState", "Send"]

MAX_MESSAGE = 65_535  # larger messages are refused (UDP cannot carry them; §18.1.1)
SECOND = 1000 * MS
LINGER = 64 * T1  # how long a finished call's dialogs still answer late messages


class B2BUA:
    """The B2BUA core. Not thread-safe; one instance per event loop."""

    def __init__(self, config: Config, seed: int | None = None) -> None:
        self.config = config
        self.ids = Ids(seed if seed is not None else config.seed)
        self.txs: LiveTransactions[tuple[Endpoint, Transport]] = LiveTransactions()
        self.calls: dict[str, Call] = {}
        self.finished: list[Call] = []
        self.stats = Stats()
        self._legs: dict[tuple[str, str], Leg] = {}  # (Call-ID, local tag) -> leg
        self._a_invites: dict[TxKey, Leg] = {}  # A-leg INVITE server tx -> leg
        self._clients: dict[TxKey, _Client] = {}
        self._later: list[tuple[int, int, Callable[[int], list[Action]]]] = []
        self._later_seq = 0
        self._handlers: dict[str, Callable[[SipRequest, Endpoint, Transport, int], list[Action]]]
        self._handlers = {
            "INVITE": self._on_invite,
            "ACK": self._on_ack,
            "CANCEL": self._on_cancel,
            "BYE": self._on_bye,
            "OPTIONS": self._on_options,
        }

    # -- entry points ----------------------------------------------------------------------

    def receive(self, data: bytes, src: Endpoint, transport: Transport, now: int) -> list[Action]:
        """One message's bytes from ``src``; returns what to send and what happened."""
        self.stats.received += 1
        if len(data) > MAX_MESSAGE:
            self.stats.drop("too-large")
            return []
        try:
            msg = parse_message(data)
        except ParseError:
            self.stats.drop("unparseable")  # RFC 3261 §18.1.2 / §18.2.1: discarded
            return []
        if isinstance(msg, SipResponse):
            return self._on_response(msg, now)
        bad = self._bad_request(msg)
        if bad:
            return self._reject_malformed(msg, bad, src, transport)
        handler = self._handlers.get(msg.method.upper(), self._on_other)
        return handler(msg, src, transport, now)

    def expire(self, now: int) -> list[Action]:
        out: list[Action] = []
        for item in self.txs.expire(now):
            if isinstance(item, Retransmit):
                dst, transport = item.dst
                out.append(self._send(item.data, dst, transport))
            else:
                out += self._terminated(item, now)
        for call in list(self.calls.values()):
            if call.deadline is not None and call.deadline <= now:
                call.deadline = None
                out += self._no_answer(call, now)
        while self._later and self._later[0][0] <= now:
            _, _, fn = heapq.heappop(self._later)
            out += fn(now)
        return out

    def transport_error(self, dst: Endpoint, transport: Transport, now: int) -> list[Action]:
        """A connection to ``dst`` could not be made or broke: its client transactions end
        (RFC 3261 §17.1.1.2, §17.1.2.2; §8.1.3.1: treated as a 503 by the TU)."""
        out: list[Action] = []
        for key, client in list(self._clients.items()):
            if client.leg.peer == dst and client.leg.transport is transport:
                for item in self.txs.transport_error(key, now):
                    out += self._terminated(item, now)
        return out

    def schedule(self, when: int, fn: Callable[[int], list[Action]]) -> None:
        """Run ``fn(now)`` at ``when`` (ns): the built-in UAs' ringing, hang-ups, re-INVITEs."""
        self._later_seq += 1
        heapq.heappush(self._later, (when, self._later_seq, fn))

    def next_deadline(self) -> int | None:
        times = [c.deadline for c in self.calls.values() if c.deadline is not None]
        if self._later:
            times.append(self._later[0][0])
        tx = self.txs.next_deadline()
        if tx is not None:
            times.append(tx)
        return min(times) if times else None

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
        if status < 300 and req.method in ("INVITE",) and status > 100:
            headers.append(("Contact", self._contact(transport)))
        headers.append(("Server", self.config.name))
        headers += list(extra)
        ctype = "application/sdp"
        return self._assemble(f"SIP/2.0 {status} {reason}", headers, body, ctype)

    def _request(
        self,
        leg: Leg,
        method: str,
        cseq: int,
        branch: str,
        body: bytes = b"",
        ctype: str = "application/sdp",
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
        if method in ("INVITE", "UPDATE", "SUBSCRIBE", "REFER"):
            headers.append(("Contact", self._contact(leg.transport)))
        headers.append(("User-Agent", self.config.name))
        headers += list(extra)
        target = uri or leg.remote_target
        return self._assemble(f"{method} {target} SIP/2.0", headers, body, ctype)

    def _client_send(self, leg: Leg, method: str, data: bytes, now: int, client: _Client) -> Send:
        msg = parse_message(data)
        key = key_of(msg)
        assert key is not None  # we built Via and CSeq
        self.txs.send_request(
            key, method, data, (leg.peer, leg.transport), is_reliable(leg.transport), now
        )
        self._clients[key] = client
        if method == "INVITE":
            leg.invite_key, leg.invite_data = key, data
            leg.invite = msg if isinstance(msg, SipRequest) else None
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

    # -- requests ----------------------------------------------------------------------------

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

    def _on_invite(self, req: SipRequest, src: Endpoint, t: Transport, now: int) -> list[Action]:
        new, out = self._server_new(req, src, t, now)
        if not new:
            return out
        if req.to_tag is not None:
            return self._in_dialog(req, src, t, now)
        return self._new_call(req, src, t, now)

    def _new_call(self, req: SipRequest, src: Endpoint, t: Transport, now: int) -> list[Action]:
        out: list[Action] = [self._reply(req, 100, "Trying", src, t, now)]
        call = Call(self.ids.uuid(), now)
        ruri = _parsed_uri(req.uri)
        user = (ruri.user if ruri else None) or ""
        a = self._a_leg(call, req, src, t, user)
        self.calls[call.uuid] = call
        out += self._events_new_a(call, a, now)
        refusal = self._caller_auth(req)
        if refusal is not None:
            return out + self._fail_a(call, refusal[0], refusal[1], now, refusal[2])
        target = None
        for route in self.config.routes:
            target = route.target_for(user)
            if target is not None:
                call.route = route
                break
        if target is None or call.route is None:
            return out + self._fail_a(call, 404, "Not Found", now)
        return out + self._start_b(call, target, now)

    def _a_leg(self, call: Call, req: SipRequest, src: Endpoint, t: Transport, user: str) -> Leg:
        contact = req.contacts[0].uri if req.contacts else _uri_of(req.headers.get("from") or "")
        rr = tuple(v for v in req.headers.get_all("record-route"))
        a = Leg(
            uuid=self.ids.uuid(),
            call=call,
            role="a",
            channel=f"sofia/internal/{user or 'unknown'}@{self._local(t).ip}",
            transport=t,
            peer=src,
            call_id=req.call_id or "",
            local_tag=self.ids.token(),
            local_uri=_strip_tag(req.headers.get("to") or ""),
            remote_uri=_strip_tag(req.headers.get("from") or ""),
            remote_tag=req.from_tag,
            remote_target=contact,
            route_set=rr,
            cseq=1,
            invite=req,
            invite_key=key_of(req),
        )
        call.a = a
        self._legs[(a.call_id, a.local_tag)] = a
        if a.invite_key is not None:
            self._a_invites[a.invite_key] = a
        return a

    def _caller_auth(self, req: SipRequest) -> tuple[int, str, tuple[tuple[str, str], ...]] | None:
        """Digest auth of callers (RFC 3261 §22.3): None when allowed."""
        ca = self.config.caller_auth
        if ca is None:
            return None
        value = req.headers.get("proxy-authorization")
        if value is not None:
            try:
                cred = auth.parse_credentials(value)
            except ParseError:
                cred = None
            if cred is not None and cred.username in ca.users:
                if auth.verify(cred, ca.users[cred.username], req.method):
                    return None
                return (403, "Forbidden", ())
        challenge = auth.challenge_value(ca.realm, self.ids.token(24), ca.algorithm)
        return (407, "Proxy Authentication Required", (("Proxy-Authenticate", challenge),))

    def _start_b(self, call: Call, target: str, now: int) -> list[Action]:
        a, route = call.a, call.route
        assert a is not None and route is not None and a.invite is not None
        dst = _hostport(target)
        if dst is None:
            return self._fail_a(call, 404, "Not Found", now)
        t = route.transport
        local = self._local(t)
        fa = a.invite.from_
        from_uri = _parsed_uri(fa.uri if fa else None)
        user = (from_uri.user if from_uri else None) or "b2bua"
        display = fa.display if fa else None
        shown = f'"{display.strip(chr(34))}" ' if display else ""
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
        )
        call.b = b
        call.b_call_ids.append(b.call_id)
        self._legs[(b.call_id, b.local_tag)] = b
        timeout = (
            route.timeout_s if route.timeout_s is not None else self.config.no_answer_timeout_s
        )
        call.deadline = now + int(timeout * SECOND)
        out = self._events_new_b(call, b, now)
        body = a.invite.body
        if route.srtp and body:
            body, offered = media.offer_sdes(body, self.ids.bytes)
            call.srtp_offer = offered
        call.b_offer = body
        return [*out, self._send_invite(b, body, now)]

    def _send_invite(
        self, b: Leg, body: bytes, now: int, extra: tuple[tuple[str, str], ...] = ()
    ) -> Send:
        call = b.call
        if self.config.x_cid and call.a is not None:
            extra = (*extra, ("X-CID", call.a.call_id))
        data = self._request(b, "INVITE", b.cseq, self.ids.branch(), body, extra=extra)
        return self._client_send(b, "INVITE", data, now, _Client(b, "INVITE"))

    def _on_ack(self, req: SipRequest, src: Endpoint, t: Transport, now: int) -> list[Action]:
        key = key_of(req)
        if key is not None and self.txs.receive_ack(key, now) is not Verdict.UNKNOWN:
            return []  # ACK to a non-2xx final (§17.2.1)
        leg = self._legs.get((req.call_id or "", req.to_tag or ""))
        if leg is None or leg.invite_key is None:
            self.stats.drop("stray-ack")
            return []
        self.txs.receive_ack(leg.invite_key, now)  # ACK to our 2xx (§13.3.1.4)
        return []

    def _on_cancel(self, req: SipRequest, src: Endpoint, t: Transport, now: int) -> list[Action]:
        new, out = self._server_new(req, src, t, now)
        if not new:
            return out
        key = key_of(req)
        a = (
            self._a_invites.get(TxKey(key.branch, key.sent_by, "INVITE", key.rfc2543))
            if key
            else None
        )
        if a is None or a.call.answer is not None or a.call.done:
            return [*out, self._reply(req, 481, "Call/Transaction Does Not Exist", src, t, now)]
        out.append(self._reply(req, 200, "OK", src, t, now))
        call = a.call
        call.cancelled = True
        call.ended_by = "caller"
        out += self._cancel_b(call, now)
        return out + self._fail_a(call, 487, "Request Terminated", now, cause="ORIGINATOR_CANCEL")

    def _cancel_b(self, call: Call, now: int) -> list[Action]:
        """CANCEL our INVITE (RFC 3261 §9.1: only after a provisional response)."""
        b = call.b
        if b is None or b.invite_data == b"" or b.confirmed or b.state is LegState.HANGUP:
            return []
        if not b.provisional:
            return []  # sent when the first provisional arrives (_on_b_provisional)
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

    def _on_bye(self, req: SipRequest, src: Endpoint, t: Transport, now: int) -> list[Action]:
        new, out = self._server_new(req, src, t, now)
        if not new:
            return out
        leg = self._legs.get((req.call_id or "", req.to_tag or ""))
        if leg is None:
            return [*out, self._reply(req, 481, "Call/Transaction Does Not Exist", src, t, now)]
        out.append(self._reply(req, 200, "OK", src, t, now))
        call = leg.call
        call.ended_by = "caller" if leg.role == "a" else "callee"
        other = call.b if leg.role == "a" else call.a
        out += self._hangup_leg(leg, "NORMAL_CLEARING", now)
        if other is not None and other.confirmed:
            out += self._bye(other, now)
        return out + self._end_call(call, now)

    def _bye(self, leg: Leg, now: int) -> list[Action]:
        leg.cseq += 1
        data = self._request(leg, "BYE", leg.cseq, self.ids.branch())
        out: list[Action] = [self._client_send(leg, "BYE", data, now, _Client(leg, "BYE"))]
        return out + self._hangup_leg(leg, "NORMAL_CLEARING", now)

    def _on_options(self, req: SipRequest, src: Endpoint, t: Transport, now: int) -> list[Action]:
        if req.to_tag is not None:
            return self._on_other(req, src, t, now)
        new, out = self._server_new(req, src, t, now)
        if not new:
            return out
        allow = (("Allow", "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE"),)
        return [*out, self._reply(req, 200, "OK", src, t, now, self.ids.token(), extra=allow)]

    def _on_other(self, req: SipRequest, src: Endpoint, t: Transport, now: int) -> list[Action]:
        new, out = self._server_new(req, src, t, now)
        if not new:
            return out
        if req.to_tag is None:
            return [*out, self._reply(req, 405, "Method Not Allowed", src, t, now)]
        return out + self._in_dialog(req, src, t, now)

    def _in_dialog(self, req: SipRequest, src: Endpoint, t: Transport, now: int) -> list[Action]:
        """Relay a mid-dialog request (re-INVITE, INFO, UPDATE, ...) to the other leg."""
        leg = self._legs.get((req.call_id or "", req.to_tag or ""))
        call = leg.call if leg else None
        other = (call.b if leg.role == "a" else call.a) if leg and call else None
        if leg is not None and call is not None and other is None:
            return self._local_request(leg, req, src, t, now)
        if leg is None or other is None or not other.confirmed:
            resp = self._response(req, 481, "Call/Transaction Does Not Exist")
            return [self._answer(req, resp, 481, src, t, now)]
        if req.contacts:
            leg.remote_target = req.contacts[0].uri
        other.cseq += 1
        ctype = req.headers.get("content-type") or "application/sdp"
        data = self._request(other, req.method, other.cseq, self.ids.branch(), req.body, ctype)
        key = key_of(req)
        assert key is not None
        client = _Client(other, req.method, (leg, req, key))
        return [self._client_send(other, req.method, data, now, client)]

    # -- responses ---------------------------------------------------------------------------

    def _on_response(self, resp: SipResponse, now: int) -> list[Action]:
        key = key_of(resp)
        if key is None:
            self.stats.drop("unmatchable-response")
            return []
        verdict, resend = self.txs.receive_response(key, resp.status, now)
        out: list[Action] = [self._send(r.data, r.dst[0], r.dst[1]) for r in resend]
        client = self._clients.get(key)
        if client is None or verdict is Verdict.UNKNOWN:
            self.stats.drop("stray-response")
            return out
        if verdict is Verdict.RETRANSMISSION:
            if 200 <= resp.status < 300 and client.method == "INVITE" and client.leg.ack_data:
                leg = client.leg
                out.append(self._send(leg.ack_data, leg.peer, leg.transport))  # §13.2.2.4
            return out
        if resp.status >= 200:
            self._clients.pop(key, None) if client.method != "INVITE" else None
        if client.relay is not None:
            return out + self._relay_response(client, resp, now)
        if client.method == "INVITE":
            return out + self._on_b_invite_response(client.leg, resp, now)
        return out

    def _on_b_invite_response(self, b: Leg, resp: SipResponse, now: int) -> list[Action]:
        status = resp.status
        if status == 100:
            return []
        if status < 200:
            return self._on_b_provisional(b, resp, now)
        if status < 300:
            return self._on_b_answer(b, resp, now)
        out = self._ack_failure(b, resp, now)
        call = b.call
        route = call.route
        if (
            status in (401, 407)
            and route
            and route.username
            and b.auth_tries < 2
            and not call.cancelled
        ):
            retry = self._auth_retry(b, resp, now)
            if retry:
                return out + retry
        if call.cancelled or call.done:
            out += self._hangup_leg(b, "ORIGINATOR_CANCEL", now)
            return out + self._end_call(call, now)
        cause = {486: "USER_BUSY", 404: "UNALLOCATED_NUMBER", 408: "RECOVERY_ON_TIMER_EXPIRE"}
        out += self._hangup_leg(b, cause.get(status, "CALL_REJECTED"), now)
        return out + self._fail_a(
            call, status, resp.reason, now, cause=cause.get(status, "CALL_REJECTED")
        )

    def _on_b_provisional(self, b: Leg, resp: SipResponse, now: int) -> list[Action]:
        out: list[Action] = []
        first = not b.provisional
        b.provisional = True
        call, a = b.call, b.call.a
        if call.cancelled:
            return self._cancel_b(call, now) if first else []
        if resp.to_tag:
            b.remote_tag = resp.to_tag
        if a is None or a.invite is None or call.done:
            return out
        new = LegState.EARLY if resp.body else LegState.RINGING
        for leg in (b, a):
            if leg.state is not new and leg.state in (LegState.DOWN, LegState.RINGING):
                out.append(self._ev(EventKind.CALLSTATE, leg, now, leg.state.value, new.value))
                leg.state = new
        body = media.strip_sdes(resp.body) if call.srtp_offer and resp.body else resp.body
        data = self._response(
            a.invite, resp.status, resp.reason, a.local_tag, body, transport=a.transport
        )
        out.append(self._answer(a.invite, data, resp.status, a.peer, a.transport, now))
        return out

    def _on_b_answer(self, b: Leg, resp: SipResponse, now: int) -> list[Action]:
        call, a = b.call, b.call.a
        b.remote_tag = resp.to_tag
        if resp.contacts:
            b.remote_target = resp.contacts[0].uri
        b.route_set = tuple(reversed(resp.headers.get_all("record-route")))  # §12.1.2
        out: list[Action] = [self._ack_2xx(b, now)]
        if a is None and not (call.cancelled or call.done):
            return out + self._uac_answered(b, resp, now)
        if call.cancelled or call.done or a is None or a.invite is None:
            b.state = LegState.ACTIVE
            return out + self._bye(b, now)  # answered after CANCEL crossed it (§15)
        call.deadline = None
        call.answer = now
        call.final_code, call.final_reason = resp.status, resp.reason
        body = resp.body
        if call.srtp_offer and body:
            call.srtp_answer = media.selected(body)
            body = media.strip_sdes(body)  # the A leg is plain RTP (the seed's flow)
        data = self._response(
            a.invite, resp.status, resp.reason, a.local_tag, body, transport=a.transport
        )
        out.append(self._answer(a.invite, data, resp.status, a.peer, a.transport, now))
        for leg in (b, a):
            out.append(self._ev(EventKind.ANSWER, leg, now))
            out.append(self._ev(EventKind.CALLSTATE, leg, now, leg.state.value, "ACTIVE"))
            leg.state = LegState.ACTIVE
        out.append(self._ev(EventKind.ORIGINATE, a, now, new="Success", detail=b.channel))
        return out

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

    def _auth_retry(self, b: Leg, resp: SipResponse, now: int) -> list[Action]:
        """Re-send the INVITE with credentials (RFC 3261 §22.2); [] when we cannot."""
        route = b.call.route
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
        body = b.call.b_offer
        return [self._send_invite(b, body, now, ((name, cred),))]

    def _relay_response(self, client: _Client, resp: SipResponse, now: int) -> list[Action]:
        """Answer the relayed mid-dialog request on its leg with this response's code."""
        assert client.relay is not None
        origin, req, _ = client.relay
        out: list[Action] = []
        if client.method == "INVITE" and resp.status >= 200:
            if resp.status < 300:
                out.append(self._ack_2xx(client.leg, now))
            else:
                out += self._ack_failure(client.leg, resp, now)
        if resp.status == 100:
            return out
        data = self._response(
            req, resp.status, resp.reason, None, resp.body, transport=origin.transport
        )
        out.append(self._answer(req, data, resp.status, origin.peer, origin.transport, now))
        if client.method == "INVITE" and 200 <= resp.status < 300:
            key = key_of(req)
            if key is not None:
                self._a_invites[key] = origin
                origin.invite_key = key  # its ACK ends the 2xx retransmission
        return out

    # -- ends ----------------------------------------------------------------------------------

    # -- hooks for the built-in UAs (sipflow.b2bua.ua) ----------------------------------------

    def _uac_answered(self, b: Leg, resp: SipResponse, now: int) -> list[Action]:
        """A B leg with no A leg was answered (the B2BUA never has one)."""
        return self._bye(b, now)

    def _local_request(
        self, leg: Leg, req: SipRequest, src: Endpoint, t: Transport, now: int
    ) -> list[Action]:
        """A mid-dialog request on a call with one leg (the B2BUA never has one)."""
        return [self._reply(req, 481, "Call/Transaction Does Not Exist", src, t, now)]

    def _fail_a(
        self,
        call: Call,
        status: int,
        reason: str,
        now: int,
        extra: tuple[tuple[str, str], ...] = (),
        cause: str = "",
    ) -> list[Action]:
        """Final non-2xx to the caller; the call ends."""
        a = call.a
        out: list[Action] = []
        if a is None and not call.done:  # a built-in UAC's call
            call.final_code, call.final_reason = status, reason
            return self._end_call(call, now)
        if a is None or a.invite is None or call.done:
            return out
        call.final_code, call.final_reason = status, reason
        data = self._response(a.invite, status, reason, a.local_tag, extra=extra)
        out.append(self._answer(a.invite, data, status, a.peer, a.transport, now))
        causes = {
            404: "UNALLOCATED_NUMBER",
            486: "USER_BUSY",
            487: "ORIGINATOR_CANCEL",
            408: "NO_ANSWER",
        }
        out += self._hangup_leg(a, cause or causes.get(status, "CALL_REJECTED"), now)
        if call.b is not None and call.answer is None:
            out.append(self._ev(EventKind.ORIGINATE, a, now, new="Fail", detail=call.b.channel))
        return out + self._end_call(call, now)

    def _no_answer(self, call: Call, now: int) -> list[Action]:
        if call.done or call.answer is not None:
            return []
        call.cancelled = False
        out = self._cancel_b(call, now)
        if call.b is not None and call.b.state is not LegState.HANGUP:
            call.b.state = LegState.HANGUP
        out += self._fail_a(call, 408, "Request Timeout", now, cause="NO_ANSWER")
        call.cancelled = True  # late responses on the B leg end in ACK/BYE, not relays
        call.outcome = "no-answer"
        return out

    def _terminated(self, item: TxTerminated, now: int) -> list[Action]:
        client = self._clients.pop(item.key, None)
        self._a_invites.pop(item.key, None)
        if client is None or not item.timed_out:
            return []
        if client.method == "INVITE" and client.relay is None:
            call = client.leg.call
            if not call.done and call.answer is None and item.event is TxEvent.TRANSPORT_ERROR:
                out = self._hangup_leg(client.leg, "NETWORK_OUT_OF_ORDER", now)
                return out + self._fail_a(call, 503, "Service Unavailable", now)
            if not call.done and call.answer is None:
                out = self._hangup_leg(client.leg, "RECOVERY_ON_TIMER_EXPIRE", now)
                return out + self._fail_a(
                    call, 408, "Request Timeout", now, cause="RECOVERY_ON_TIMER_EXPIRE"
                )
        if client.relay is not None:
            origin, req, _ = client.relay
            data = self._response(req, 408, "Request Timeout")
            return [self._answer(req, data, 408, origin.peer, origin.transport, now)]
        return []

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
        self.finished.append(call)
        # late retransmissions (BYE, 2xx, ACK) still find the dialog for 64*T1 (§17.1.1.2)
        self.schedule(now + LINGER, functools.partial(self._forget, call))
        a = call.a
        return [self._ev(EventKind.CALL_END, a, now, new=call.outcome)] if a is not None else []

    def _forget(self, call: Call, now: int) -> list[Action]:
        """Drop a finished call's dialogs and kept messages; its summary stays in
        ``finished`` for the truth file (memory per finished call is a few hundred bytes)."""
        for leg in (call.a, call.b):
            if leg is not None:
                self._legs.pop((leg.call_id, leg.local_tag), None)
                leg.invite, leg.invite_data, leg.ack_data = None, b"", b""
        call.b_offer = b""
        return []

    # -- events ----------------------------------------------------------------------------------

    def _ev(
        self, kind: EventKind, leg: Leg, now: int, old: str = "", new: str = "", detail: str = ""
    ) -> CallEvent:
        return CallEvent(kind, now, leg.call.uuid, leg.uuid, leg.channel, old, new, detail)

    def _events_new_a(self, call: Call, a: Leg, now: int) -> list[Action]:
        out: list[Action] = [self._ev(EventKind.NEW_CHANNEL, a, now, detail=a.call_id)]
        for old, new in (
            ("CS_NEW", "CS_INIT"),
            ("CS_INIT", "CS_ROUTING"),
            ("CS_ROUTING", "CS_EXECUTE"),
        ):
            out.append(self._ev(EventKind.STATE, a, now, old, new))
        return out

    def _events_new_b(self, call: Call, b: Leg, now: int) -> list[Action]:
        out: list[Action] = [self._ev(EventKind.NEW_CHANNEL, b, now, detail=b.call_id)]
        out.append(self._ev(EventKind.STATE, b, now, "CS_NEW", "CS_INIT"))
        out.append(self._ev(EventKind.STATE, b, now, "CS_INIT", "CS_CONSUME_MEDIA"))
        return out
