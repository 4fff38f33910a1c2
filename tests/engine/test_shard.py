"""Call-ID sharding (sipflow.engine.shard): a split run equals the single-process run.

Shard 0 (this process) reads every packet, keeps the per-packet facts and feeds each worker
shard the messages of its Call-IDs; every shard parses only its own. The oracle is the
single-process analysis of the same files: the JSON document must be equal, findings
compared as a multiset (a split run lists them by frame, the single run in the order they
were raised).
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import zlib
from pathlib import Path
from typing import Any

import pytest
from test_pool import rotate

from sipflow.api import SPLIT_MIN_BYTES, Options, _shards, analyze
from sipflow.engine import shard
from sipflow.engine.shard import BUCKETS, Shard, call_id_of, plan

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "samples" / "pcaps"


def _doc(paths: list[str], **kw: Any) -> dict[str, Any]:
    opts = Options(keep_messages=False, keep_records=False, **kw)
    return analyze(paths, opts).to_dict()


def _assert_split_equals_single(paths: list[str]) -> dict[str, Any]:
    single = _doc(paths, jobs=1)
    split = _doc(paths, jobs=2, split=True)
    single_findings = sorted(json.dumps(f, sort_keys=True) for f in single.pop("findings"))
    split_findings = sorted(json.dumps(f, sort_keys=True) for f in split.pop("findings"))
    for key in single:
        assert split[key] == single[key], key
    assert split_findings == single_findings
    return single


@pytest.mark.parametrize("name", sorted(p.name for p in SAMPLES.glob("*.pcap")))
def test_split_equals_single_on_the_samples(name: str) -> None:
    doc = _assert_split_equals_single([str(SAMPLES / name)])
    assert doc["calls"], "a sample with no call would test nothing"


def test_split_equals_single_across_rotated_files(tmp_path: Path) -> None:
    """Calls crossing file boundaries are one call in both runs."""
    files = rotate(SAMPLES / "sipp_uac_uas_udp_mixed.pcap", tmp_path, 8)
    doc = _assert_split_equals_single(files)
    assert len(files) == 6 and len(doc["calls"]) == 5


def test_calls_a_worker_sends_ahead_join_its_output(
    shared_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker sends its released calls back in runs (shard.Shipper) before its output;
    in runs of one call the document still equals the single run's (a capture whose
    calls end well before it does: the samples' are all still open at their end)."""
    parts: list[object] = []
    loads = shard._loads

    def received(data: bytes) -> object:
        parts.append(loads(data))
        return parts[-1]

    monkeypatch.setattr(shard.Shipper, "every", 1)  # the forked worker sees it too
    monkeypatch.setattr(shard, "_loads", received)
    _assert_split_equals_single([str(shared_dir / "corpus" / "pcaps" / "sngrep__aaa.pcap")])
    ahead = [p for p in parts if isinstance(p, list)]  # the runs sent before the output
    assert ahead and all(len(p) == 1 for p in ahead)
    assert len(ahead) == len(parts) - 1 and isinstance(parts[-1], shard.ShardOutput)


def test_both_shards_get_work_on_the_demo_sample() -> None:
    """Not a vacuous split: the demo's calls fall in both shards of two."""
    doc = _doc([str(SAMPLES / "sipp_uac_uas_udp_mixed.pcap")], jobs=1)
    first = plan(2)[0]
    ids = [cid.encode() for call in doc["calls"] for cid in call["call_ids"]]
    owners = {0 if first.lo <= zlib.crc32(c) % BUCKETS < first.hi else 1 for c in ids}
    assert owners == {0, 1}


# The one kind of difference a split run makes, and why: a response is matched to its
# transaction by branch and CSeq method (RFC 3261 §17.1.3), not by Call-ID, so a response
# whose Call-ID was rewritten on the way still belongs to its request's transaction in one
# process; split by Call-ID, it is parsed in the shard of its own Call-ID, alone.
REWRITTEN_CALL_ID = {
    # frame 7208: 200 OK to a BYE with Call-ID 1111-2222-3333-4444@1.1.1.1
    "heplify__FAX-Call-t38-CA-TDM-SIP-FB-1.pcap": "1111-2222-3333-4444@1.1.1.1",
}


def _findings(doc: dict[str, Any]) -> list[str]:
    return sorted(json.dumps(f, sort_keys=True) for f in doc["findings"])


def test_split_equals_single_on_the_corpus(shared_dir: Path) -> None:
    pcaps = sorted(
        p for p in (shared_dir / "corpus" / "pcaps").iterdir() if p.suffix in {".pcap", ".pcapng"}
    )
    assert len(pcaps) > 50
    for p in pcaps:
        if p.name in REWRITTEN_CALL_ID:
            continue
        try:
            _assert_split_equals_single([str(p)])
        except AssertionError as exc:
            raise AssertionError(f"{p.name}: {exc}") from exc


@pytest.mark.parametrize("name", sorted(REWRITTEN_CALL_ID))
def test_a_response_with_a_rewritten_call_id_is_the_known_difference(
    shared_dir: Path, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With these bucket edges the request's and the response's Call-IDs fall in different
    # shards (the difference shows); other plans may put them together (no difference).
    monkeypatch.setattr(shard, "FED_SHARE", 0.15)
    path = [str(shared_dir / "corpus" / "pcaps" / name)]
    single, split = _doc(path, jobs=1), _doc(path, jobs=2, split=True)
    extra = set(_findings(split)) - set(_findings(single))
    assert set(_findings(single)) <= set(_findings(split))
    assert [json.loads(f)["code"] for f in extra] == ["sip.orphan_response"]
    assert REWRITTEN_CALL_ID[name] in json.loads(extra.pop())["message"]
    # one retransmission fewer on the call whose BYE it answered; nothing else changes
    assert split["stats"]["retransmissions"] == single["stats"]["retransmissions"] - 1
    assert split["stats"]["sip_messages"] == single["stats"]["sip_messages"]
    for key in set(single) - {"stats", "calls", "findings"}:
        assert split[key] == single[key], key


def test_call_id_is_read_from_raw_bytes() -> None:
    msg = b"INVITE sip:b@x SIP/2.0\r\nVia: SIP/2.0/UDP h\r\ncall-ID:  abc@h \r\n\r\nv=0\r\n"
    assert call_id_of(msg) == b"abc@h"
    compact = b"BYE sip:b@x SIP/2.0\ni: abc@h\nCSeq: 2 BYE\n\n"
    assert call_id_of(compact) == b"abc@h"
    # an SDP i= line (session information) is not a compact Call-ID header
    assert call_id_of(b"SIP/2.0 200 OK\r\n\r\nv=0\r\ni=call-id: no\r\n") is None


def test_call_id_search_equals_the_multiline_pattern() -> None:
    """call_id_of searches after each newline (fast) instead of ``(?im)^`` at every offset;
    the first Call-ID line found must be the same, also at offset 0, in a body, with bare
    LF, CR LF, compact and odd-case names."""
    import random
    import re

    plain = re.compile(rb"(?im)^(?:call-id|i)[ \t]*:[ \t]*([^\r\n]*)")
    parts = [b"Call-ID: a@h", b"i:b", b"I \t: c ", b"call-id:d", b"CALL-ID :", b"x-i: e"]
    parts += [b"i=no", b"Via: i: f", b"\r", b"\n", b"\r\n", b" ", b"INVITE sip:x SIP/2.0"]
    rng = random.Random(7)
    seen = set()
    for _ in range(5000):
        data = b"".join(rng.choice(parts) for _ in range(rng.randint(0, 8)))
        m = plain.search(data)
        assert call_id_of(data) == (m.group(1).strip() if m else None), data
        seen.add("none" if m is None else "first line" if m.start() == 0 else "later")
    assert seen == {"none", "first line", "later"}


def test_messages_without_call_id_go_to_shard_zero() -> None:
    first, second = plan(2)
    assert first.mine(b"garbage on a SIP port") and not second.mine(b"garbage on a SIP port")


def test_plan_covers_every_bucket_once() -> None:
    for n in (2, 3, 4, 8, 16):
        shards = plan(n)
        assert [s.index for s in shards] == list(range(n))
        assert shards[0].lo == 0 and shards[-1].hi == BUCKETS
        assert all(a.hi == b.lo and a.lo <= a.hi for a, b in itertools.pairwise(shards))
        # shard 0 also reads RTP, so it takes the smallest share of Call-IDs
        assert shards[0].hi - shards[0].lo <= min(s.hi - s.lo for s in shards[1:])
    assert Shard(1, 2, 0, 0).mine(b"x") is False


def test_when_a_run_is_split() -> None:
    demo = str(SAMPLES / "sipp_uac_uas_udp_mixed.pcap")
    plain = Options(keep_messages=False, keep_records=False)
    assert _shards([demo], Options(keep_messages=False, keep_records=False, jobs=2)) == 1
    assert Path(demo).stat().st_size < SPLIT_MIN_BYTES  # too small to pay for a worker
    forced = Options(keep_messages=False, keep_records=False, jobs=2, split=True)
    assert _shards([demo], forced) == 2
    assert _shards([demo], Options(jobs=2, split=True)) == 1  # messages kept: one process
    plain.split, plain.jobs = True, 1
    assert _shards([demo], plain) == 1
    log = str(SAMPLES / "regen_basic.log")
    assert _shards([log], forced) == 1  # logs tie channels to their own messages
    assert _shards(["-"], forced) == 1  # stdin cannot be read twice


def _worker_dies(*_args: Any) -> None:
    raise MemoryError("killed")  # what a worker out of memory sends back


def test_a_failed_worker_redoes_the_run_in_one_process(monkeypatch: pytest.MonkeyPatch) -> None:
    import sipflow.engine.shard as shard

    path = [str(SAMPLES / "regen_basic.pcap")]
    single = _doc(path, jobs=1)
    monkeypatch.setattr(shard, "run_shard", _worker_dies)  # forked workers see it too
    redone = _doc(path, jobs=2, split=True)
    assert [f["code"] for f in redone.pop("findings")][-1] == "engine.split_failed"
    single.pop("findings")
    assert redone == single


def _worker_killed(_paths: list[str], _shard: Shard, _opts: Options, inbox: Any, *_: Any) -> bytes:
    next(inbox.items(0))  # shard 0 has started feeding it
    os.kill(os.getpid(), signal.SIGKILL)  # the out-of-memory killer, say
    raise AssertionError("not reached")


@pytest.mark.timeout(120)
def test_a_worker_killed_while_fed_redoes_the_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """Shard 0 writing to a dead worker's pipe neither hangs nor fails: it finishes its
    own part, finds the worker's output missing, and redoes the run in one process."""
    path = [str(SAMPLES / "sipp_uac_uas_udp_mixed.pcap")]
    single = _doc(path, jobs=1)
    monkeypatch.setattr(shard, "run_shard", _worker_killed)
    monkeypatch.setattr(shard, "BATCH", 1)  # a write per message: some after the kill
    redone = _doc(path, jobs=2, split=True)
    assert [f["code"] for f in redone.pop("findings")][-1] == "engine.split_failed"
    single.pop("findings")
    assert redone == single


def test_a_packed_shard_output_unpacks_equal() -> None:
    """What a worker sends back (calls rebuilt by their constructors, sipflow.engine.shard.
    pack) unpacks equal to what it built, SDP lines, formats and refs included."""
    opts = Options(keep_messages=False, keep_records=False, jobs=2, split=True)
    path = [str(SAMPLES / "sipp_uac_uas_udp_mixed.pcap")]
    built = shard.run_shard(path, plan(2)[1], opts)
    out = shard.unpack(built)
    calls = out.built.calls
    assert calls and any(m.exchanges and m.exchanges[0].lines for _, m, _ in calls)
    again = shard.unpack(shard.pack(out))
    assert again.built.calls == calls and again.sources == out.sources
    assert again.built.counts == out.built.counts and again.built.findings == out.built.findings


def test_classes_packed_by_constructor_take_every_field() -> None:
    """pack rebuilds these by calling the class with every field's value: a field left out
    of ``__init__`` or a ``__post_init__`` would break or change that."""
    from dataclasses import fields

    packed = [cls for cls in shard._by_constructor() if hasattr(cls, "__dataclass_fields__")]
    assert len(packed) == 8
    for cls in packed:
        assert all(f.init for f in fields(cls)) and not hasattr(cls, "__post_init__"), cls
