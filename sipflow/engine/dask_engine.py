"""The per-file stage as Dask tasks: ``--engine dask --scheduler ADDRESS``.

How this works: every file becomes one ``dask.distributed`` task running
:func:`sipflow.engine.pool.run_file` - the same function the local process pool runs -
on whichever worker the scheduler picks. The files must be readable at the same path
on every worker (a shared or replicated file system). The client gathers each file's
:class:`~sipflow.engine.pool.FileOutput` (messages and SourceResult) and
:func:`sipflow.api.analyze` merges them exactly as for the local engine: one timeline
ordered by (time, source), duplicate captures dropped, the CallBuilder grouping by
Call-ID and tying B2BUA legs. The merge is done once, in the client, because legs of
one call may carry different Call-IDs: splitting it by Call-ID across workers could
not give the local engine's calls, and equal results are the contract.

Dask is optional (``pip install sipflow[dask]``) and imported only here, only when
this engine is asked for.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from sipflow.engine.local import SourceResult
from sipflow.engine.pool import (
    FileOutput,
    Progress,
    Reading,
    collect_outputs,
    failed_output,
    run_file,
)
from sipflow.engine.progress import ProgressTracker
from sipflow.errors import EngineError
from sipflow.sip.message import SipMessage


def _client(scheduler: str | None) -> Any:
    if not scheduler:
        raise EngineError("--engine dask needs --scheduler ADDRESS (e.g. tcp://host:8786)")
    try:
        from distributed import Client
    except ImportError as exc:
        raise EngineError("the dask engine needs dask: pip install 'sipflow[dask]'") from exc
    return Client(scheduler, set_as_default=False)  # type: ignore[no-untyped-call,unused-ignore]


def run_sources_dask(
    paths: Sequence[str],
    scheduler: str | None,
    progress: bool | None = None,
    tracker: ProgressTracker | None = None,
    reading: Reading | None = None,
) -> tuple[list[SourceResult], list[Iterator[SipMessage]]]:
    """Every file's per-source stage as one task on the cluster at ``scheduler``.

    Returns one SourceResult and one time-ordered message iterator per path, in the
    order of ``paths``, like :func:`sipflow.engine.pool.run_sources`.
    """
    from distributed import as_completed

    client = _client(scheduler)
    meter = Progress.for_stderr(len(paths), False if tracker else progress)
    try:
        futures = client.map(
            run_file, list(paths), range(len(paths)), reading=reading or Reading(), pure=False
        )
        index = {f.key: i for i, f in enumerate(futures)}
        outputs: list[FileOutput | None] = [None] * len(paths)
        for fut in as_completed(futures, loop=client.loop):  # type: ignore[no-untyped-call,unused-ignore]
            i = index[fut.key]
            out = outputs[i] = _gather(fut, paths[i], i)
            meter.done(out.result.stats.frames)
            if tracker is not None:  # Options.progress
                tracker.read(i, out.result.stats, force=True)
    finally:
        meter.close()
        client.close()
    return collect_outputs([o for o in outputs if o is not None])


def _gather(fut: Any, path: str, source: int) -> FileOutput:
    try:
        out: FileOutput = fut.result()
    except Exception as exc:  # a worker lost, an unpicklable result: the file, not the run
        return failed_output(path, source, exc)
    return out
