"""An analysis as a Parquet dataset: ``sipflow index FILES... -o store/``.

How this works: :func:`write_store` writes six tables, each a Parquet dataset in its own
directory, hive-partitioned by UTC day (``calls/day=2026-11-29/part-0.parquet``), so
pandas, DuckDB and Dask read them directly and a query for one day opens one directory:

    messages      one row per SIP message (trace.messages columns + ``raw`` bytes)
    transactions  one row per transaction (trace.transactions)
    dialogs       one row per dialog (trace.dialogs)
    calls         one row per call (trace.calls columns; nested ones as JSON text)
    streams       one row per RTP stream (trace.rtp_streams columns)
    findings      one row per Finding (trace.findings columns)

``calls``, ``streams`` and ``findings`` rows also carry ``seq`` (the row's place in the
analysis) and ``json`` (the row exactly as docs/json.md gives it), and ``store.json``
beside the tables holds the rest of the JSON document (sources, stats, activity, PBX
channel events). :func:`read_document` puts the document back together from these
without reading any capture, so ``sipflow analyze store/`` prints what analysing the
files printed. Which day a row belongs to: a message's time, a transaction's start, a
dialog's creation, a call's start, a stream's first packet; findings carry no time of
their own and go to the day the analysis starts (``day=none`` when nothing had a time).
"""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sipflow.errors import SipflowError

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

    from sipflow.trace import Trace

STORE_VERSION = 1
META = "store.json"
TABLES = ("messages", "transactions", "dialogs", "calls", "streams", "findings")

# JSON document key -> table whose rows carry its items (``seq`` + ``json`` columns).
ROW_TABLES = {"calls": "calls", "findings": "findings", "rtp_streams": "streams"}
# Table -> Trace DataFrame with its typed columns, and the column giving each row's day.
_FRAMES = {
    "messages": ("messages", "ts"),
    "transactions": ("transactions", "start"),
    "dialogs": ("dialogs", "created"),
    "calls": ("calls", "start"),
    "streams": ("rtp_streams", "start"),
    "findings": ("findings", None),
}
NO_DAY = "none"


class StoreError(SipflowError):
    """A directory that is not a sipflow store, or one that cannot be written."""


def is_store(path: str | Path) -> bool:
    """True when ``path`` is a directory written by :func:`write_store`."""
    return (Path(path) / META).is_file()


def day_of(ns: int | None) -> str:
    """The UTC day (``YYYY-MM-DD``) of a time in nanoseconds, ``none`` without one."""
    if ns is None:
        return NO_DAY
    return datetime.fromtimestamp(ns // 1_000_000_000, UTC).strftime("%Y-%m-%d")


def write_store(trace: Trace, out: str | Path) -> dict[str, int]:
    """Write ``trace`` (analysed with messages and records kept) as a store in ``out``.

    Returns the rows written per table. An existing store there is replaced; a
    non-empty directory that is not a store is left alone (StoreError).
    """
    try:
        import pyarrow  # noqa: F401
    except ImportError as exc:
        raise StoreError("the store needs pyarrow: pip install 'sipflow[parquet]'") from exc
    root = _prepare(Path(out))
    doc = trace.to_dict()
    rows: dict[str, int] = {}
    for table in TABLES:
        rows[table] = _write_table(root / table, _table(trace, doc, table))
    meta = {k: v for k, v in doc.items() if k not in ROW_TABLES}
    meta["store"] = {"version": STORE_VERSION, "keys": list(doc), "rows": rows}
    (root / META).write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    return rows


def _prepare(root: Path) -> Path:
    if root.exists() and not root.is_dir():
        raise StoreError(f"{root} is a file, not a directory")
    if root.is_dir() and any(root.iterdir()) and not is_store(root):
        raise StoreError(f"{root} is not empty and not a sipflow store; not overwriting it")
    for table in TABLES:
        shutil.rmtree(root / table, ignore_errors=True)
    root.mkdir(parents=True, exist_ok=True)
    return root


def _table(trace: Trace, doc: dict[str, Any], table: str) -> pa.Table:
    """One table's rows: the Trace DataFrame, its ``day``, and ``seq``/``json`` or ``raw``."""
    import pyarrow as pa

    frame_name, time_col = _FRAMES[table]
    df = _frame(trace, frame_name)
    default_day = day_of(trace.start)
    if time_col is None or time_col not in df.columns:
        days = [default_day] * len(df)
    else:
        days = [_day_of_value(v, default_day) for v in df[time_col].tolist()]
    items = _doc_items(doc, table)
    if items is not None:
        if len(items) != len(df):  # the document is what must round-trip
            df = df.iloc[0:0].reindex(range(len(items)))
        df["seq"] = range(len(items))
        df["json"] = [json.dumps(i, separators=(",", ":")) for i in items]
    if table == "messages":
        df["raw"] = [m.raw for m in trace.message_list]
    df["day"] = days if len(days) == len(df) else [default_day] * len(df)
    for col in df.columns:
        if df[col].dtype == object and df[col].map(_nested).any():
            df[col] = [None if v is None else json.dumps(v) for v in df[col].tolist()]
    try:
        return pa.Table.from_pandas(df, preserve_index=False)
    except UnicodeEncodeError:  # text decoded with surrogateescape from non-UTF-8 bytes
        for col in df.columns:
            if df[col].dtype == object or str(df[col].dtype) == "str":
                df[col] = [_utf8(v) for v in df[col].tolist()]
        return pa.Table.from_pandas(df, preserve_index=False)


def _utf8(value: Any) -> Any:
    """Text Parquet can hold: undecodable bytes as ``\\xNN`` (``raw``/``json`` keep them)."""
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return value


def _nested(value: Any) -> bool:
    """A dict, or a list holding dicts: stored as JSON text (Parquet structs need a fixed,
    non-empty set of fields; these vary from row to row)."""
    if isinstance(value, dict):
        return True
    return isinstance(value, list | tuple) and any(isinstance(v, dict | list) for v in value)


def _frame(trace: Trace, name: str) -> pd.DataFrame:
    """The Trace's DataFrame; for messages whose text is not UTF-8 (pandas' pyarrow strings
    refuse it), the same rows with the undecodable bytes escaped."""
    try:
        frame: pd.DataFrame = getattr(trace, name)
        return frame.copy()
    except UnicodeEncodeError:
        if name != "messages":
            raise
    import pandas as pd

    from sipflow.report import frames

    rows = [{k: _utf8(v) for k, v in frames._message_row(m).items()} for m in trace.message_list]
    return pd.DataFrame(rows, columns=frames._MESSAGE_COLUMNS)


def _doc_items(doc: dict[str, Any], table: str) -> list[Any] | None:
    for key, name in ROW_TABLES.items():
        if name == table:
            items: list[Any] = doc.get(key, [])
            return items
    return None


def _day_of_value(value: Any, default: str) -> str:
    """The day of a pandas Timestamp or an integer of nanoseconds (NaT/None: ``default``)."""
    if value is None or value != value:  # None, NaN, NaT
        return default
    ns = value if isinstance(value, int) else int(value.value)
    return day_of(ns)


def _write_table(path: Path, table: pa.Table) -> int:
    import pyarrow.parquet as pq

    path.mkdir(parents=True)  # an empty table is an empty directory
    if table.num_rows:
        pq.write_to_dataset(table, str(path), partition_cols=["day"])
    return int(table.num_rows)


def read_table(store: str | Path, table: str) -> pa.Table:
    """One table of a store as a pyarrow Table (``day`` back as a column)."""
    import pyarrow.dataset as ds

    if table not in TABLES:
        raise StoreError(f"no table {table!r} in a store (tables: {', '.join(TABLES)})")
    path = Path(store) / table
    if not path.is_dir():
        raise StoreError(f"{store} has no {table} table")
    return ds.dataset(str(path), format="parquet", partitioning="hive").to_table()


def read_document(store: str | Path) -> dict[str, Any]:
    """The JSON document (docs/json.md) of the analysis a store holds, without captures."""
    if not is_store(store):
        raise StoreError(f"{store} is not a sipflow store (no {META})")
    meta = json.loads((Path(store) / META).read_text(encoding="utf-8"))
    info = meta.pop("store")
    if info.get("version") != STORE_VERSION:
        raise StoreError(f"{store}: store version {info.get('version')} is not supported")
    doc: dict[str, Any] = {}
    for key in info["keys"]:
        doc[key] = _rows(store, ROW_TABLES[key]) if key in ROW_TABLES else meta[key]
    return doc


def _rows(store: str | Path, table: str) -> list[Any]:
    """A row table's ``json`` column in ``seq`` order, decoded."""
    import pyarrow.dataset as ds

    path = Path(store) / table
    if not any(path.rglob("*.parquet")):  # an empty table
        return []
    data = ds.dataset(str(path), format="parquet", partitioning="hive")
    cols = data.to_table(columns=["seq", "json"]).to_pydict()
    ordered = sorted(zip(cols["seq"], cols["json"], strict=True))
    return [json.loads(text) for _, text in ordered]
