"""Blind transfer in the B2BUA: REFER (RFC 3515) from the callee's side, done for the caller.

How this works: a REFER inside a B leg's dialog asks the B2BUA, which holds the caller's
leg, to become the transferee, as FreeSWITCH does for a bridged channel (RFC 5589 §6.1
"basic transfer"). :meth:`Transfers._accept_refer` answers ``202 Accepted``, sends the
first NOTIFY (``Event: refer;id=<CSeq>``, ``message/sipfrag`` ``SIP/2.0 100 Trying``,
``Subscription-State: active``; RFC 3515 §2.4.4-§2.4.6), routes the Refer-To user
through the configured routes like a new call's Request-URI user and INVITEs the target
on a new leg: own Call-ID and tags, the caller's identity, the caller's last SDP, and
``Referred-By`` copied from the REFER (RFC 3892 §3; the transferor's URI when the REFER
had none). The new leg is a B-side leg of the same :class:`~sipflow.b2bua.model.Call`,
so it is in the same truth entry and the same channel log.

:meth:`Transfers._on_transfer_response` follows its INVITE: provisionals only change
channel state; a 2xx is ACKed, the caller is re-INVITEd with the target's SDP (media
passes through, so the caller must send to the target now), the transferor gets the
final NOTIFY ``SIP/2.0 200 OK`` with ``Subscription-State: terminated;reason=noresource``
and the new leg becomes the call's B leg; the transferor's BYE then ends only its own
leg (``BLIND_TRANSFER``). A failure (or no answer within the route's timeout: CANCEL) is
reported by the final NOTIFY with its status line; the call stays bridged to the
transferor, or, if the transferor already hung up, the caller gets a BYE. Upstream
digest challenges on the new leg are answered as on any B leg.
"""

from __future__ import annotations

import functools

from sipflow.b2bua import media
from sipflow.b2bua.dialogs import Dialogs, sdp_body
from sipflow.b2bua.model import (
    Action,
    Call,
    EventKind,
    Leg,
    LegState,
    Transfer,
    _Client,
    _parsed_uri,
    _strip_tag,
    _uri_of,
)
from sipflow.ingest.types import Endpoint, Transport
from sipflow.sip.message import SipRequest, SipResponse

SIPFRAG = "message/sipfrag;version=2.0"  # RFC 3420; RFC 3515 §2.4.5
EXPIRES_S = 60  # the implicit subscription's lifetime in the first NOTIFY (RFC 3515 §2.4.4)
CAUSES = {
    404: "UNALLOCATED_NUMBER",
    408: "NO_ANSWER",
    480: "NO_USER_RESPONSE",
    486: "USER_BUSY",
    487: "ORIGINATOR_CANCEL",
}
"""Hangup causes of the target's leg by its final status (FreeSWITCH's names)."""


class Transfers(Dialogs):
    """The REFER side of the B2BUA core (see the module docstring)."""

    def _refer_refusal(self, call: Call, leg: Leg, req: SipRequest) -> tuple[int, str] | None:
        """Why this REFER cannot be done, as (status, reason); None when it can."""
        refer_to = req.headers.get_all("refer-to")
        if len(refer_to) != 1:  # RFC 3515 §2.4.1: exactly one Refer-To, else 400
            return 400, "Missing Refer-To header" if not refer_to else "Several Refer-To values"
        if "replaces=" in refer_to[0].lower():  # attended transfer (RFC 3891) is not done here
            return 501, "Replaces Not Implemented"
        if call.a is None or not call.a.confirmed or not leg.confirmed or call.done:
            return 403, "Call Not Answered"  # nothing to transfer yet
        if call.transfer is not None:
            return 491, "Request Pending"  # one transfer at a time
        return None

    def _accept_refer(
        self, leg: Leg, req: SipRequest, src: Endpoint, t: Transport, now: int
    ) -> list[Action]:
        """A REFER on the B leg ``leg``: 202, NOTIFY 100, INVITE to the target."""
        call = leg.call
        refusal = self._refer_refusal(call, leg, req)
        if refusal is not None:
            return [self._reply(req, refusal[0], refusal[1], src, t, now)]
        target = _uri_of(req.headers.get("refer-to") or "")
        xfer = Transfer(
            by=leg,
            refer_to=target,
            referred_by=req.headers.get("referred-by") or _strip_tag(leg.remote_uri),
            event=f"refer;id={req.cseq.seq if req.cseq else 1}",
            at=now,
        )
        call.transfer = xfer
        call.transfers.append(xfer)
        out: list[Action] = [self._reply(req, 202, "Accepted", src, t, now)]
        out += self._notify(xfer, 100, "Trying", now)
        return out + self._transfer_start(call, xfer, now)

    def _transfer_start(self, call: Call, xfer: Transfer, now: int) -> list[Action]:
        uri = _parsed_uri(xfer.refer_to)
        found = self._route_for((uri.user if uri else None) or "")
        if found is None or call.a is None:
            return self._transfer_failed(xfer, 404, "Not Found", now)
        route, target = found
        leg, out = self._originate(call, route, target, call.a.sdp, now, referred=xfer)
        xfer.leg = leg
        if leg is None:
            return self._transfer_failed(xfer, 404, "Not Found", now)
        timer = functools.partial(self._transfer_timeout, xfer)
        self.schedule(now + self._ring_limit(route), timer)
        return out

    def _notify(
        self, xfer: Transfer, status: int, reason: str, now: int, final: bool = False
    ) -> list[Action]:
        """NOTIFY on the transferor's leg with the target's status line (RFC 3515 §2.4.5);
        nothing once that leg hung up."""
        leg = xfer.by
        if leg.state is LegState.HANGUP:
            return []
        leg.cseq += 1
        state = "terminated;reason=noresource" if final else f"active;expires={EXPIRES_S}"
        extra = (("Event", xfer.event), ("Subscription-State", state))
        body = f"SIP/2.0 {status} {reason}\r\n".encode()
        data = self._request(leg, "NOTIFY", leg.cseq, self.ids.branch(), body, SIPFRAG, extra)
        return [self._client_send(leg, "NOTIFY", data, now, _Client(leg, "NOTIFY"))]

    # -- the new leg's INVITE ------------------------------------------------------------------

    def _on_transfer_response(self, c: Leg, resp: SipResponse, now: int) -> list[Action]:
        xfer = c.referred
        assert xfer is not None
        if resp.status == 100:
            return []
        if resp.status < 200:
            first = not c.provisional
            c.provisional = True
            if xfer.abandoned:
                return self._cancel_leg(c, now) if first else []
            return self._early(c, resp, now)
        if resp.status < 300:
            return self._transfer_answered(xfer, c, resp, now)
        out = self._ack_failure(c, resp, now)
        if self._may_retry_auth(c, resp.status) and not xfer.abandoned:
            retry = self._auth_retry(c, resp, now)
            if retry:
                return out + retry
        return out + self._transfer_failed(xfer, resp.status, resp.reason, now)

    def _transfer_answered(
        self, xfer: Transfer, c: Leg, resp: SipResponse, now: int
    ) -> list[Action]:
        """The target answered: ACK it, point the caller's media at it, tell the
        transferor, and bridge the caller to the new leg."""
        call, a = c.call, c.call.a
        self._b_dialog(c, resp)
        out: list[Action] = [self._ack_2xx(c, now)]
        if xfer.abandoned or call.done or a is None or not a.confirmed:
            c.state = LegState.ACTIVE
            return out + self._bye(c, now)  # nobody left to bridge it to
        out += self._answered(c, now)
        out.append(self._ev(EventKind.ORIGINATE, a, now, new="Success", detail=c.channel))
        xfer.final_code, xfer.final_reason = resp.status, resp.reason
        call.transfer, call.b = None, c
        body = sdp_body(resp)
        if c.srtp_offer and body:
            c.srtp_answer = media.selected(body)
            body = media.strip_sdes(body)  # the caller's leg stays plain RTP
        if body:
            out.append(self._reinvite(a, body, now))
        return out + self._notify(xfer, resp.status, resp.reason, now, final=True)

    def _transfer_failed(self, xfer: Transfer, code: int, reason: str, now: int) -> list[Action]:
        """The target could not be reached: report it; the call goes on with the
        transferor, or ends if the transferor already left."""
        call = xfer.by.call
        call.transfer = None
        xfer.final_code, xfer.final_reason = code, reason
        out: list[Action] = []
        if xfer.leg is not None:
            out += self._hangup_leg(xfer.leg, CAUSES.get(code, "CALL_REJECTED"), now)
        if call.done:
            return out
        if xfer.by.state is not LegState.HANGUP:
            return out + self._notify(xfer, code, reason, now, final=True)
        a = call.a
        call.ended_by = "callee"
        if a is not None and a.confirmed:
            out += self._bye(a, now)
        return out + self._end_call(call, now)

    def _transfer_timeout(self, xfer: Transfer, now: int) -> list[Action]:
        """The target did not answer within the route's timeout: CANCEL it (its 487
        ends the transfer)."""
        c = xfer.leg
        if xfer.final_code is not None or c is None or c.confirmed or xfer.abandoned:
            return []
        xfer.abandoned = True
        return self._cancel_leg(c, now)

    def _abandon_transfer(self, call: Call, now: int) -> list[Action]:
        """The call ends while its transfer target is still being called."""
        xfer = call.transfer
        if xfer is None or xfer.leg is None:
            return []
        xfer.abandoned = True
        return self._cancel_leg(xfer.leg, now)  # or at its first provisional (§9.1)

    def _transfer_timed_out(self, c: Leg, now: int) -> list[Action]:
        """Timer B (or a transport error) on the new leg's INVITE."""
        xfer = c.referred
        if xfer is None or xfer.final_code is not None:
            return []
        return self._transfer_failed(xfer, 408, "Request Timeout", now)
