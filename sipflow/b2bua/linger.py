"""What an ended call still answers for 64*T1: transaction keys, not dialogs (RFC 3261 §17).

How this works: when a call ends, its dialogs are over (RFC 3261 §15) but its
transactions must still meet late retransmissions for 64*T1: the caller's INVITE (an
INVITE server in Accepted absorbs a re-sent INVITE and its ACKs; RFC 6026 §7.1, Timer
L), our INVITE on the B leg (a re-sent 2xx gets our ACK again; RFC 3261 §13.2.2.4, RFC
6026 §8.4, Timer M) and the BYE we answered (a re-sent BYE gets the same final response;
§17.2.2, Timer J). Kept whole (legs, transactions, messages) that was about 7 KB a call
(tracemalloc), and at 50 calls/s 1,650 ended calls linger at any time. :class:`Lingering`
keeps only what those answers need, under 1 KB a call: each transaction's key as one
string, for our INVITE the ACK (bytes and where it goes), for a server transaction the
status of its final response, rebuilt from the retransmitted request itself
(:meth:`~sipflow.b2bua.dialogs.Dialogs._response` echoes the request, §8.2.6.2, so the
bytes are the same). :class:`SettlingTransactions` is the live transaction layer that
hands such a quiet transaction over: nothing of its own left to re-send, only absorbing.
Entries end ``LINGER`` after the call ended, in the order they came (deques, no heap:
the linger is the same for every entry).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from sipflow.b2bua.model import Send
from sipflow.ingest.types import Endpoint, Transport
from sipflow.sip.live_tx import LiveTransactions
from sipflow.sip.transaction import TxKey, TxKind, TxState

Dst = tuple[Endpoint, Transport]
_PEERS_MAX = 4096  # distinct peer endpoints shared between entries (then started afresh)


@dataclass(frozen=True, slots=True)
class Answered:
    """A server transaction's final response, to be rebuilt for a retransmission."""

    status: int
    reason: str


class SettlingTransactions(LiveTransactions[Dst]):
    """The live transaction layer, able to hand over a quiet transaction (see module)."""

    def quiet(self, key: TxKey) -> bool | None:
        """Whether ``key`` only absorbs retransmissions now: an INVITE client in Accepted
        (RFC 6026 §8.4), an INVITE server in Accepted whose 2xx was ACKed (its 2xx timer
        finds nothing to re-send, §13.3.1.4), a non-INVITE server in Completed (§17.2.2);
        None when there is no such transaction (it ended)."""
        tx = self._txs.get(key)
        if tx is None:
            return None
        return (
            (tx.kind is TxKind.INVITE_CLIENT and tx.state is TxState.ACCEPTED)
            or (tx.kind is TxKind.INVITE_SERVER and tx.state is TxState.ACCEPTED and not tx.data)
            or (tx.kind is TxKind.NON_INVITE_SERVER and tx.state is TxState.COMPLETED)
        )

    def hand_over(self, key: TxKey) -> bool:
        """Remove a quiet transaction (its timer entries are stale from now on and go
        with the next compaction); False when ``key`` is not quiet (left running)."""
        if not self.quiet(key):
            return False
        del self._txs[key]
        return True


class Lingering:
    """Keys of ended calls' transactions and what a late retransmission gets (module doc).
    Sans-IO: ``now`` comes in; :meth:`request` / :meth:`response` say what to send."""

    def __init__(self, linger: int) -> None:
        self.linger = linger
        self._kept: dict[str, Answered | Send | None] = {}
        """Flat key (:func:`_flat`) -> a server's final response to rebuild, a client
        INVITE's ACK to send again for a re-sent 2xx, or None (absorb)."""
        self._due: deque[tuple[int, int]] = deque()
        """(until, how many keys): one entry for the keys kept at one moment (a call's
        end); the keys themselves are in :attr:`_due_keys`, in the same order."""
        self._due_keys: deque[str] = deque()
        self._peers: dict[Endpoint, Endpoint] = {}

    def __len__(self) -> int:
        return len(self._kept)

    def keep_server(self, key: TxKey, answered: Answered | None, now: int) -> None:
        self._keep(_flat("s", key), answered, now)

    def keep_client(self, key: TxKey, ack: Send | None, now: int) -> None:
        if ack is not None:
            dst = self._peers.setdefault(ack.dst, ack.dst)
            if len(self._peers) > _PEERS_MAX:
                self._peers.clear()
            ack = Send(ack.data, dst, ack.transport)
        self._keep(_flat("c", key), ack, now)

    def _keep(self, flat: str, value: Answered | Send | None, now: int) -> None:
        self._kept[flat] = value
        self._due_keys.append(flat)
        until = now + self.linger
        if self._due and self._due[-1][0] == until:
            self._due[-1] = (until, self._due[-1][1] + 1)
        else:
            self._due.append((until, 1))

    def request(self, key: TxKey) -> tuple[bool, Answered | None]:
        """(known, the final response to rebuild) for a request of an ended call's
        transaction; an ACK's key (its INVITE's, §17.2.3) finds the INVITE: absorbed."""
        flat = _flat("s", key)
        if flat not in self._kept:
            return False, None
        value = self._kept[flat]
        return True, value if isinstance(value, Answered) else None

    def response(self, key: TxKey, status: int) -> tuple[bool, Send | None]:
        """(known, the ACK to send again) for a response on an ended call's client
        transaction: a re-sent 2xx gets the ACK (§13.2.2.4), anything else is absorbed
        (RFC 6026 §8.4: Accepted absorbs, the TU sees only 2xx)."""
        flat = _flat("c", key)
        if flat not in self._kept:
            return False, None
        value = self._kept[flat]
        return True, value if isinstance(value, Send) and 200 <= status < 300 else None

    def expire(self, now: int) -> None:
        """Forget what was kept ``linger`` ago or earlier (entries are in the order they
        were kept; a clock stepping back only makes some wait longer)."""
        due, keys = self._due, self._due_keys
        while due and due[0][0] <= now:
            for _ in range(due.popleft()[1]):
                self._kept.pop(keys.popleft(), None)

    def next_deadline(self) -> int | None:
        return self._due[0][0] if self._due else None


def _flat(side: str, key: TxKey) -> str:
    """A transaction key as one string (server "s" or client "c", method, sent-by, then
    the branch or the RFC 2543 identity): about half the memory of the tuple and its
    strings. Method and sent-by hold no space (RFC 3261 §25.1 token, hostport)."""
    return f"{side}{'2' if key.rfc2543 else '3'} {key.method} {key.sent_by} {key.branch}"
