"""The Parquet store of an analysis (``sipflow index``), read back by pandas, DuckDB, Dask."""

from sipflow.store.parquet import (
    TABLES,
    StoreError,
    is_store,
    read_document,
    read_table,
    write_store,
)

__all__ = ["TABLES", "StoreError", "is_store", "read_document", "read_table", "write_store"]
