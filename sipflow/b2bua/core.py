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
Transactions run in :class:`~sipflow.sip.live_tx.LiveTransactions` (RFC 3261 §17);
requests inside a dialog are relayed leg to leg with their own CSeq, responses mapped
back. A REFER from the B leg's side is a blind transfer the B2BUA carries out
(:mod:`sipflow.b2bua.transfer`); building and sending messages, ACK, CANCEL, BYE and
the end of a call are shared with the built-in UAs (:mod:`sipflow.b2bua.dialogs`).
Request handlers are a table.

With ``media = "anchor"`` each call gets an :class:`~sipflow.b2bua.media.Anchor`: one of
our RTP port pairs per leg, the SDP of each leg rewritten to name ours, and
:meth:`B2BUA.media_received` relaying each RTP/RTCP datagram to the other leg (SRTP
protected/unprotected on an SRTP leg); the ports are opened when the B leg is INVITEd and
closed when the call ends (:class:`~sipflow.b2bua.media.MediaOpen` / ``MediaClose``).

When a call ends its legs are dropped at once; what RFC 3261 §17 still needs for 64*T1
(late retransmissions of the caller's INVITE and BYE, of the B side's 2xx) stays as
transaction keys in :attr:`B2BUA.lingering` (:mod:`sipflow.b2bua.linger`), answered
before any handler runs. A call with a transaction still working at its end (a 2xx not
ACKed yet, a failure's final response being re-sent) or with transfers lingers whole.
"""

from __future__ import annotations

from collections.abc import Callable, Sized

from sipflow.b2bua import media
from sipflow.b2bua.config import Config
from sipflow.b2bua.dialogs import LINGER, SECOND, sdp_body
from sipflow.b2bua.linger import Answered, Lingering, SettlingTransactions
from sipflow.b2bua.model import (
    Action,
    Call,
    CallEvent,
    EventKind,
    Leg,
    LegState,
    Send,
    _Client,
    _parsed_uri,
    _strip_tag,
    _uri_of,
)
from sipflow.b2bua.transfer import Transfers
from sipflow.errors import ParseError
from sipflow.ingest.types import Endpoint, Transport
from sipflow.sip import auth
from sipflow.sip.live_tx import Retransmit, TxTerminated, Verdict
from sipflow.sip.message import SipRequest, SipResponse, parse_message
from sipflow.sip.transaction import TxEvent, TxKey, key_of

__all__ = [
    "B2BUA",
    "LINGER",
    "SECOND",
    "Action",
    "Call",
    "CallEvent",
    "EventKind",
    "Leg",
    "LegState",
    "Send",
]

MAX_MESSAGE = 65_535  # larger messages are refused (UDP cannot carry them; §18.1.1)
_BYE_OK = Answered(200, "OK")  # what a BYE ending a call was answered (one shared record)
Handler = Callable[[SipRequest, Endpoint, Transport, int], list[Action]]


class B2BUA(Transfers):
    """The B2BUA core. Not thread-safe; one instance per event loop."""

    def __init__(self, config: Config, seed: int | None = None) -> None:
        super().__init__(config, seed)
        self._handlers: dict[str, Handler] = {
            "INVITE": self._on_invite,
            "ACK": self._on_ack,
            "CANCEL": self._on_cancel,
            "BYE": self._on_bye,
            "OPTIONS": self._on_options,
            "REFER": self._on_refer,
        }
        self.ports: media.PortPool | None = None
        """Anchored media: our free RTP port pairs (None: SDP passed through)."""
        if config.media == "anchor":
            ip = config.media_ip or config.listen[0].host
            self.ports = media.PortPool(ip, *config.rtp_ports)
        self._anchors: dict[Endpoint, media.Anchor] = {}  # our RTP endpoint -> its call's relay
        self._settling = SettlingTransactions()
        self.txs = self._settling
        self.lingering = Lingering(LINGER)
        """Ended calls' transactions, as keys and what a late retransmission gets."""

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
        late = self._late_request(msg, src, transport)
        if late is not None:
            return late
        handler = self._handlers.get(msg.method.upper(), self._on_other)
        return handler(msg, src, transport, now)

    def expire(self, now: int) -> list[Action]:
        self.lingering.expire(now)
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
        return out + self._run_later(now)

    def next_deadline(self) -> int | None:
        due = (super().next_deadline(), self.lingering.next_deadline())
        times = [t for t in due if t is not None]
        return min(times) if times else None

    def sizes(self) -> dict[str, Sized]:
        return {**super().sizes(), "lingering": self.lingering}

    def media_received(self, data: bytes, local: Endpoint, src: Endpoint, now: int) -> list[Action]:
        """An RTP/RTCP datagram reached our ``local`` port: relay it to the other leg."""
        anchor = self._anchors.get(Endpoint(local.ip, local.port - (local.port % 2)))
        if anchor is None:
            self.stats.drop("stray-media")
            return []
        dropped = anchor.dropped
        out = anchor.relay(data, local)
        if out is None:
            if anchor.dropped > dropped:  # else held until the answer keys the leg
                self.stats.drop("media-dropped")
            return []
        return [out]

    def transport_error(self, dst: Endpoint, transport: Transport, now: int) -> list[Action]:
        """A connection to ``dst`` could not be made or broke: its client transactions end
        (RFC 3261 §17.1.1.2, §17.1.2.2; §8.1.3.1: treated as a 503 by the TU)."""
        out: list[Action] = []
        for key, client in list(self._clients.items()):
            if client.leg.peer == dst and client.leg.transport is transport:
                for item in self.txs.transport_error(key, now):
                    out += self._terminated(item, now)
        return out

    # -- a new call ----------------------------------------------------------------------------

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
        out += self._events_new_a(a, now)
        refusal = self._caller_auth(req)
        if refusal is not None:
            return out + self._fail_a(call, refusal[0], refusal[1], now, refusal[2])
        found = self._route_for(user)
        if found is None:
            return out + self._fail_a(call, 404, "Not Found", now)
        call.route = found[0]
        return out + self._start_b(call, found[1], now)

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
            sdp=sdp_body(req),
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
        body, opened = a.invite.body, []
        if self.ports is not None and sdp_body(a.invite):
            anchor = self._open_anchor(call)
            if anchor is None:
                self.stats.drop("no-rtp-port")
                return self._fail_a(call, 503, "Service Unavailable", now)
            anchor.a_remote = media.media_address(body)
            anchor.srtp = route.srtp
            body = media.anchor_sdp(body, anchor.b_local)
            opened = [media.MediaOpen(anchor.a_local), media.MediaOpen(anchor.b_local)]
        b, out = self._originate(call, route, target, body, now)
        if b is None:
            return self._fail_a(call, 404, "Not Found", now)
        call.b = b
        call.deadline = now + self._ring_limit(route)
        return opened + out

    # -- anchored media ------------------------------------------------------------------------

    def _open_anchor(self, call: Call) -> media.Anchor | None:
        """Two of our port pairs for ``call`` (A leg, B leg); None when too few are free."""
        assert self.ports is not None
        if len(self.ports) < 2:
            return None
        a_local, b_local = self.ports.take(), self.ports.take()
        assert a_local is not None and b_local is not None
        call.anchor = media.Anchor(a_local, b_local)
        self._anchors[a_local] = self._anchors[b_local] = call.anchor
        return call.anchor

    def _to_a(self, b: Leg, body: bytes, final: bool) -> tuple[bytes, list[Action]]:
        """The B side's SDP as the caller gets it: plain RTP (the seed's flow) and, when
        anchored, naming our A-leg pair; a final answer also keys the SRTP relay (the
        SRTP it held until then is relayed)."""
        if not body:
            return body, []
        if b.srtp_offer:
            if final:
                b.srtp_answer = media.selected(body)
            body = media.strip_sdes(body)
        anchor = b.call.anchor
        if anchor is None:
            return body, []
        anchor.b_remote = media.media_address(body) or anchor.b_remote
        held: list[Action] = []
        if final and b.srtp_offer:
            ours = media.offered_for(b.srtp_offer, b.srtp_answer)
            if ours is not None and b.srtp_answer is not None:
                held += anchor.keyed(*media.srtp_pair(ours, b.srtp_answer))
        return media.anchor_sdp(body, anchor.a_local), held

    def _anchored(self, frm: Leg, body: bytes) -> bytes:
        """A mid-dialog SDP from ``frm`` as the other leg gets it when anchored: its
        peer's new address noted, our pair on the other leg named (re-INVITE, hold)."""
        anchor = frm.call.anchor
        if anchor is None or not body:
            return body
        where = media.media_address(body)
        if frm is frm.call.a:
            anchor.a_remote = where or anchor.a_remote
            return media.anchor_sdp(body, anchor.b_local)
        anchor.b_remote = where or anchor.b_remote
        return media.anchor_sdp(body, anchor.a_local)

    def _end_call(self, call: Call, now: int) -> list[Action]:
        out = super()._end_call(call, now)
        anchor, call.anchor = call.anchor, None
        if anchor is None or self.ports is None:
            return out
        for local in (anchor.a_local, anchor.b_local):
            self._anchors.pop(local, None)
            self.ports.give(local)
            out.append(media.MediaClose(local))
        return out

    # -- requests ----------------------------------------------------------------------------

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
        return self._cancel_leg(call.b, now) if call.b is not None else []

    def _on_bye(self, req: SipRequest, src: Endpoint, t: Transport, now: int) -> list[Action]:
        new, out = self._server_new(req, src, t, now)
        if not new:
            return out
        leg = self._legs.get((req.call_id or "", req.to_tag or ""))
        if leg is None:
            return [*out, self._reply(req, 481, "Call/Transaction Does Not Exist", src, t, now)]
        out.append(self._reply(req, 200, "OK", src, t, now))
        call = leg.call
        transferor = call.transfer is not None and leg is call.transfer.by
        if (leg is not call.a and leg is not call.b) or transferor:
            # a transferor leaving (RFC 5589 §6.1): only its own leg ends
            return out + self._hangup_leg(leg, "BLIND_TRANSFER", now)
        call.ended_by = "caller" if leg.role == "a" else "callee"
        out += self._hangup_leg(leg, "NORMAL_CLEARING", now)
        for other in call.legs():
            if other is not leg and other.confirmed:
                out += self._bye(other, now)
        out += self._abandon_transfer(call, now)
        out += self._end_call(call, now)
        self._settle_server(req, _BYE_OK, now)
        return out

    def _on_options(self, req: SipRequest, src: Endpoint, t: Transport, now: int) -> list[Action]:
        if req.to_tag is not None:
            return self._on_other(req, src, t, now)
        new, out = self._server_new(req, src, t, now)
        if not new:
            return out
        allow = (("Allow", "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE, REFER, NOTIFY"),)
        return [*out, self._reply(req, 200, "OK", src, t, now, self.ids.token(), extra=allow)]

    def _on_other(self, req: SipRequest, src: Endpoint, t: Transport, now: int) -> list[Action]:
        new, out = self._server_new(req, src, t, now)
        if not new:
            return out
        if req.to_tag is None:
            return [*out, self._reply(req, 405, "Method Not Allowed", src, t, now)]
        return out + self._in_dialog(req, src, t, now)

    def _on_refer(self, req: SipRequest, src: Endpoint, t: Transport, now: int) -> list[Action]:
        """REFER on the B leg: a blind transfer we carry out (:mod:`.transfer`); from the
        caller's side (or out of dialog) it is treated like any other request."""
        leg = self._legs.get((req.call_id or "", req.to_tag or "")) if req.to_tag else None
        if leg is None or leg.role != "b" or leg is not leg.call.b or leg.call.a is None:
            return self._on_other(req, src, t, now)
        new, out = self._server_new(req, src, t, now)
        return (out + self._accept_refer(leg, req, src, t, now)) if new else out

    def _in_dialog(self, req: SipRequest, src: Endpoint, t: Transport, now: int) -> list[Action]:
        """Relay a mid-dialog request (re-INVITE, INFO, UPDATE, ...) to the other leg."""
        leg = self._legs.get((req.call_id or "", req.to_tag or ""))
        other = leg.call.peer_of(leg) if leg is not None else None
        if leg is not None and other is None:  # a UA's call, or a transferor's old leg
            return self._local_request(leg, req, src, t, now)
        if leg is None or other is None or not other.confirmed:
            resp = self._response(req, 481, "Call/Transaction Does Not Exist")
            return [self._answer(req, resp, 481, src, t, now)]
        if req.contacts:
            leg.remote_target = req.contacts[0].uri
        if req.method == "INVITE":
            leg.sdp = sdp_body(req) or leg.sdp
        other.cseq += 1
        ctype = req.headers.get("content-type") or "application/sdp"
        body = self._anchored(leg, req.body) if sdp_body(req) else req.body
        data = self._request(other, req.method, other.cseq, self.ids.branch(), body, ctype)
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
        known, ack = self.lingering.response(key, resp.status)
        if known:  # an ended call's INVITE: a re-sent 2xx gets our ACK again (§13.2.2.4)
            return [self._send(ack.data, ack.dst, ack.transport)] if ack is not None else []
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
        if resp.status >= 200 and client.method != "INVITE":
            self._clients.pop(key, None)
        if client.relay is not None:
            return out + self._relay_response(client, resp, now)
        if client.method != "INVITE":
            return out
        if client.reinvite:
            return out + self._on_reinvite_response(client.leg, resp, now)
        if client.leg.referred is not None:
            return out + self._on_transfer_response(client.leg, resp, now)
        return out + self._on_b_invite_response(client.leg, resp, now)

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
        if self._may_retry_auth(b, status) and not call.cancelled:
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
        first = not b.provisional
        b.provisional = True
        call, a = b.call, b.call.a
        if call.cancelled:
            return self._cancel_b(call, now) if first else []
        if a is None or a.invite is None or call.done:
            if resp.to_tag:
                b.remote_tag = resp.to_tag
            return []
        out = self._early(b, resp, now) + self._progress(a, resp, now)
        body, _ = self._to_a(b, resp.body, final=False)
        data = self._response(
            a.invite, resp.status, resp.reason, a.local_tag, body, transport=a.transport
        )
        out.append(self._answer(a.invite, data, resp.status, a.peer, a.transport, now))
        return out

    def _on_b_answer(self, b: Leg, resp: SipResponse, now: int) -> list[Action]:
        call, a = b.call, b.call.a
        self._b_dialog(b, resp)
        out: list[Action] = [self._ack_2xx(b, now)]
        if a is None and not (call.cancelled or call.done):
            return out + self._uac_answered(b, resp, now)
        if call.cancelled or call.done or a is None or a.invite is None:
            b.state = LegState.ACTIVE
            return out + self._bye(b, now)  # answered after CANCEL crossed it (§15)
        call.deadline = None
        call.answer = now
        call.final_code, call.final_reason = resp.status, resp.reason
        body, held = self._to_a(b, resp.body, final=True)
        data = self._response(
            a.invite, resp.status, resp.reason, a.local_tag, body, transport=a.transport
        )
        out.append(self._answer(a.invite, data, resp.status, a.peer, a.transport, now))
        out += held
        for leg in (b, a):
            out += self._answered(leg, now)
        out.append(self._ev(EventKind.ORIGINATE, a, now, new="Success", detail=b.channel))
        return out

    def _relay_response(self, client: _Client, resp: SipResponse, now: int) -> list[Action]:
        """Answer the relayed mid-dialog request on its leg with this response's code."""
        assert client.relay is not None
        origin, req, _ = client.relay
        out: list[Action] = []
        if client.method == "INVITE" and resp.status >= 200:
            if resp.status < 300:
                client.leg.sdp = sdp_body(resp) or client.leg.sdp
                out.append(self._ack_2xx(client.leg, now))
            else:
                out += self._ack_failure(client.leg, resp, now)
        if resp.status == 100:
            return out
        body = self._anchored(client.leg, resp.body) if sdp_body(resp) else resp.body
        data = self._response(req, resp.status, resp.reason, None, body, transport=origin.transport)
        out.append(self._answer(req, data, resp.status, origin.peer, origin.transport, now))
        if client.method == "INVITE" and 200 <= resp.status < 300:
            key = key_of(req)
            if key is not None:
                self._a_invites[key] = origin
                origin.invite_key = key  # its ACK ends the 2xx retransmission
        return out

    # -- ended calls: what lingers ------------------------------------------------------------

    def _linger(self, call: Call, now: int) -> None:
        """An ended call's INVITE transactions go to :attr:`lingering` as keys (and the
        ACK of the B leg's 2xx) and its legs are forgotten now, not 64*T1 later; a call
        with a transaction still working (a 2xx not yet ACKed, a failure's final response
        being re-sent) or with transfers lingers whole, as the built-in UAs' calls do."""
        legs = call.legs()
        keys = [leg.invite_key for leg in legs if leg.invite_key is not None]
        if call.transfers or any(self._settling.quiet(k) is False for k in keys):
            super()._linger(call, now)
            return
        for leg in legs:
            key = leg.invite_key
            if key is None or not self._settling.hand_over(key):
                continue
            if leg.role == "a":
                self._a_invites.pop(key, None)
                self.lingering.keep_server(key, None, now)
            else:
                self._clients.pop(key, None)
                ack = Send(leg.ack_data, leg.peer, leg.transport) if leg.ack_data else None
                self.lingering.keep_client(key, ack, now)
        self._forget(call, now)

    def _settle_server(self, req: SipRequest, answered: Answered, now: int) -> None:
        """A request of an ended call answered with a final response: its transaction
        lingers as a key; a retransmission gets the response rebuilt (§17.2.2)."""
        key = key_of(req)
        if key is not None and self._settling.hand_over(key):
            self.lingering.keep_server(key, answered, now)

    def _late_request(self, req: SipRequest, src: Endpoint, t: Transport) -> list[Action] | None:
        """A retransmitted request of an ended call (None: not one): an INVITE or its
        ACK is absorbed (RFC 6026 §7.1), a BYE gets the same final response again
        (RFC 3261 §17.2.2), rebuilt from the request as the first one was (§8.2.6.2)."""
        key = key_of(req)
        if key is None:
            return None
        known, answered = self.lingering.request(key)
        if not known:
            return None
        if answered is None or req.method == "ACK":
            return []
        data = self._response(req, answered.status, answered.reason, transport=t)
        return [self._send(data, src, t)]

    # -- hooks for the built-in UAs (sipflow.b2bua.ua) ----------------------------------------

    def _uac_answered(self, b: Leg, resp: SipResponse, now: int) -> list[Action]:
        """A B leg with no A leg was answered (the B2BUA never has one)."""
        return self._bye(b, now)

    def _local_request(
        self, leg: Leg, req: SipRequest, src: Endpoint, t: Transport, now: int
    ) -> list[Action]:
        """A mid-dialog request on a call with one leg (the B2BUA never has one)."""
        return [self._reply(req, 481, "Call/Transaction Does Not Exist", src, t, now)]

    # -- failures and timers -------------------------------------------------------------------

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
        if client.relay is not None:
            origin, req, _ = client.relay
            data = self._response(req, 408, "Request Timeout")
            return [self._answer(req, data, 408, origin.peer, origin.transport, now)]
        if client.method != "INVITE" or client.reinvite:
            return []
        if client.leg.referred is not None:
            return self._transfer_timed_out(client.leg, now)
        call = client.leg.call
        if call.done or call.answer is not None:
            return []
        if item.event is TxEvent.TRANSPORT_ERROR:
            out = self._hangup_leg(client.leg, "NETWORK_OUT_OF_ORDER", now)
            return out + self._fail_a(call, 503, "Service Unavailable", now)
        out = self._hangup_leg(client.leg, "RECOVERY_ON_TIMER_EXPIRE", now)
        return out + self._fail_a(
            call, 408, "Request Timeout", now, cause="RECOVERY_ON_TIMER_EXPIRE"
        )
