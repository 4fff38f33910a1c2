"""Live transactions: the RFC 3261 §17 machines of a UA or B2BUA that sends and answers.

How this works: :class:`LiveTransactions` steps the same transition tables as the
analyser's :class:`~sipflow.sip.transaction.TransactionTracker` (``TRANSITIONS`` only, no
observer rows) with the timers of ``TIMEOUTS`` and the retransmission intervals of
``RETRANSMIT`` (all in :mod:`sipflow.sip.transaction`, the one file of the tables). It is
sans-IO: every method takes ``now`` and returns what to send again (:class:`Retransmit`)
and which machines ended (:class:`TxTerminated`); the caller owns sockets and clocks.
"""

from __future__ import annotations

import enum
import heapq
from dataclasses import dataclass
from typing import Generic, TypeVar

from sipflow.sip.transaction import (
    FROM_START,
    RETRANSMIT,
    TIMEOUTS,
    TxEvent,
    TxKey,
    TxKind,
    TxState,
    compact_timers,
    kind_for,
    response_event,
    step,
)

_K = TxKind
_S = TxState
_E = TxEvent

D = TypeVar("D")


class Verdict(enum.StrEnum):
    """What a received message is to the live transaction layer."""

    NEW = "new"  # pass to the TU (core)
    RETRANSMISSION = "retransmission"  # absorbed (answered from the kept bytes if any)
    UNKNOWN = "unknown"  # no such transaction (stray response, late retransmission)


@dataclass(frozen=True, slots=True)
class Retransmit(Generic[D]):
    """Bytes to send again (same bytes, same destination)."""

    key: TxKey
    data: bytes
    """What was last sent on this transaction."""
    dst: D
    """Where it went (opaque to this layer)."""
    timer: TxEvent
    """Which timer (or received retransmission) caused it."""


@dataclass(frozen=True, slots=True)
class TxTerminated:
    """A live machine reached Terminated."""

    key: TxKey
    kind: TxKind
    event: TxEvent
    """The timer or transport error that ended it, or the message event."""
    timed_out: bool
    """Timer B/F (no final response), Timer H (no ACK) or a transport error."""


@dataclass(slots=True)
class _Live(Generic[D]):
    key: TxKey
    kind: TxKind
    state: TxState
    dst: D
    reliable: bool
    first_ts: int
    data: bytes = b""
    ack: bytes = b""
    rtx: int = 0
    generation: int = 0


_FAILED = frozenset({_E.TIMER_B, _E.TIMER_F, _E.TIMER_H, _E.TRANSPORT_ERROR})


class LiveTransactions(Generic[D]):
    """Client and server machines of a live endpoint, sans-IO (RFC 3261 §17).

    Every method takes ``now`` (ns) and returns the actions due; ``expire(now)`` fires
    timers. Transitions come from ``TRANSITIONS`` only (no observer rows); an event the
    table does not allow is counted in ``illegal`` and changes nothing.
    """

    def __init__(self) -> None:
        self._txs: dict[TxKey, _Live[D]] = {}
        self._timers: list[tuple[int, int, TxKey, int, bool]] = []
        self._seq = 0
        self.illegal = 0

    # -- client side ---------------------------------------------------------------------

    def send_request(
        self, key: TxKey, method: str, data: bytes, dst: D, reliable: bool, now: int
    ) -> None:
        """A request was sent (RFC 3261 §17.1.1.2 / §17.1.2.2): Calling / Trying."""
        tx = _Live(key, kind_for(method, "client"), _S.INIT, dst, reliable, now, data)
        self._txs[key] = tx
        self._event(tx, _E.REQUEST, now)

    def receive_response(
        self, key: TxKey, status: int, now: int
    ) -> tuple[Verdict, list[Retransmit[D]]]:
        """A response came in; a retransmitted non-2xx final is answered with the ACK again
        (§17.1.1.2: "any retransmissions of the final response ... MUST cause the ACK to be
        re-passed to the transport layer")."""
        tx = self._txs.get(key)
        if tx is None or tx.kind not in (_K.INVITE_CLIENT, _K.NON_INVITE_CLIENT):
            return Verdict.UNKNOWN, []
        before = tx.state
        event = response_event(status)
        self._event(tx, event, now)
        if tx.state is _S.COMPLETED or tx.state is _S.ACCEPTED:
            tx.data = b""  # a final came: the request is never re-sent (§17.1.1.2, §17.1.2.2)
        if before in (_S.COMPLETED, _S.ACCEPTED) and event is not _E.PROVISIONAL:
            out = [Retransmit(key, tx.ack, tx.dst, event)] if tx.ack and status >= 300 else []
            return Verdict.RETRANSMISSION, out
        return Verdict.NEW, []

    def ack_sent(self, key: TxKey, data: bytes, now: int) -> None:
        """The ACK for a non-2xx final was sent: kept for re-sending (§17.1.1.3)."""
        tx = self._txs.get(key)
        if tx is not None:
            tx.ack = data
            self._event(tx, _E.ACK, now)

    # -- server side ---------------------------------------------------------------------

    def receive_request(
        self, key: TxKey, method: str, dst: D, reliable: bool, now: int
    ) -> tuple[Verdict, list[Retransmit[D]]]:
        """A request came in: new, or a retransmission answered with the last response
        (§17.2.1: "the most recent provisional response"; §17.2.2 likewise)."""
        tx = self._txs.get(key)
        if tx is None:
            tx = _Live(key, kind_for(method, "server"), _S.INIT, dst, reliable, now)
            self._txs[key] = tx
            self._event(tx, _E.REQUEST, now)
            return Verdict.NEW, []
        self._event(tx, _E.REQUEST_RETRANSMIT, now)
        if tx.data:
            return Verdict.RETRANSMISSION, [Retransmit(key, tx.data, tx.dst, _E.REQUEST_RETRANSMIT)]
        return Verdict.RETRANSMISSION, []

    def send_response(self, key: TxKey, status: int, data: bytes, now: int) -> bool:
        """A response was sent on a server transaction; False when the machine refused it."""
        tx = self._txs.get(key)
        if tx is None:
            return False
        tx.data = data
        return self._event(tx, response_event(status), now)

    def receive_ack(self, key: TxKey, now: int) -> Verdict:
        """ACK for a non-2xx (same key, §17.2.1: Confirmed) or for a 2xx (the caller passes
        the INVITE's key; ends the 2xx retransmissions, §13.3.1.4)."""
        tx = self._txs.get(key)
        if tx is None or tx.kind is not _K.INVITE_SERVER:
            return Verdict.UNKNOWN
        new = tx.state is _S.COMPLETED or (tx.state is _S.ACCEPTED and tx.data != b"")
        if tx.state is _S.ACCEPTED:
            tx.data = b""  # acknowledged: the 2xx timer finds nothing to re-send and stops
            return Verdict.NEW if new else Verdict.RETRANSMISSION
        self._event(tx, _E.ACK, now)
        return Verdict.NEW if new else Verdict.RETRANSMISSION

    # -- both ------------------------------------------------------------------------------

    def transport_error(self, key: TxKey, now: int) -> list[TxTerminated]:
        tx = self._txs.get(key)
        if tx is None:
            return []
        self._event(tx, _E.TRANSPORT_ERROR, now)
        return self._reap(tx, _E.TRANSPORT_ERROR)

    def state_of(self, key: TxKey) -> TxState | None:
        tx = self._txs.get(key)
        return tx.state if tx else None

    def __len__(self) -> int:
        return len(self._txs)

    def next_deadline(self) -> int | None:
        while self._timers and not self._timer_live(self._timers[0]):
            heapq.heappop(self._timers)
        return self._timers[0][0] if self._timers else None

    def expire(self, now: int) -> list[Retransmit[D] | TxTerminated]:
        """Fire every timer due at ``now``: retransmissions and the timers ending states."""
        out: list[Retransmit[D] | TxTerminated] = []
        while self._timers and self._timers[0][0] <= now:
            entry = heapq.heappop(self._timers)
            if not self._timer_live(entry):
                continue
            deadline, _, key, _, is_rtx = entry
            tx = self._txs[key]
            if is_rtx:
                out.extend(self._retransmit(tx, deadline))
            else:
                event = TIMEOUTS[(tx.kind, tx.state)][0]
                self._event(tx, event, deadline)
                out.extend(self._reap(tx, event))
        return out

    # -- machine ---------------------------------------------------------------------------

    def _event(self, tx: _Live[D], event: TxEvent, now: int) -> bool:
        nxt = step(tx.kind, tx.state, event, observer=False)
        if nxt is None:
            self.illegal += 1
            return False
        if nxt is not tx.state:
            tx.state = nxt
            tx.generation += 1
            tx.rtx = 0
            self._arm_timeout(tx, now)
            self._arm_retransmit(tx, now)
        if nxt is _S.TERMINATED:
            self._txs.pop(tx.key, None)
            self._compact()
        return True

    def _arm_timeout(self, tx: _Live[D], now: int) -> None:
        timeout = TIMEOUTS.get((tx.kind, tx.state))
        if timeout is not None:
            event, unreliable, reliable = timeout
            base = tx.first_ts if event in FROM_START else now
            self._push(base + (reliable if tx.reliable else unreliable), tx, False)

    def _arm_retransmit(self, tx: _Live[D], now: int) -> None:
        rule = RETRANSMIT.get((tx.kind, tx.state))
        # §13.3.1.4: the 2xx is re-sent even on reliable transports (hop-by-hop only)
        if rule is None or (tx.reliable and rule[0] is not _E.SUCCESS):
            return
        _, first, cap = rule
        self._push(now + min(first << tx.rtx, cap), tx, True)

    def _retransmit(self, tx: _Live[D], now: int) -> list[Retransmit[D]]:
        rule = RETRANSMIT[(tx.kind, tx.state)]
        if not tx.data:
            return []
        tx.rtx += 1
        _, first, cap = rule
        self._push(now + min(first << tx.rtx, cap), tx, True)
        return [Retransmit(tx.key, tx.data, tx.dst, rule[0])]

    def _push(self, deadline: int, tx: _Live[D], is_rtx: bool) -> None:
        self._seq += 1
        heapq.heappush(self._timers, (deadline, self._seq, tx.key, tx.generation, is_rtx))
        self._compact()

    def _compact(self) -> None:
        # live entries: a state's timeout and its retransmission timer, two per transaction
        compact_timers(self._timers, self._timer_live, 2 * len(self._txs))

    def held_timers(self) -> int:
        """Timer entries held, live or stale (bounded by the open transactions)."""
        return len(self._timers)

    def _timer_live(self, entry: tuple[int, int, TxKey, int, bool]) -> bool:
        tx = self._txs.get(entry[2])
        return tx is not None and tx.generation == entry[3]

    def _reap(self, tx: _Live[D], event: TxEvent) -> list[TxTerminated]:
        if tx.state is not _S.TERMINATED:
            return []
        failed = event in _FAILED
        return [TxTerminated(tx.key, tx.kind, event, failed)]
