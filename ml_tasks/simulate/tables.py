"""Arrow schemas of the landing datasets and the Parquet / CSV writers.

Parquet files carry the contract's types; CSV files are UTF-8 with a header row, RFC 4180
quoting (only where a value needs it), ISO 8601 UTC timestamps with milliseconds and a ``Z``,
``true``/``false`` booleans, ``YYYY-MM-DD`` dates, decimals with 2 places and empty fields for
nulls.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ml_tasks.contract import Dataset, Kind, landing_arrow_type

PARQUET = "parquet"
CSV = "csv"

_ARROW_TYPES: dict[Kind, pa.DataType] = {kind: landing_arrow_type(kind) for kind in Kind}

#: Characters that force RFC 4180 quoting of a CSV field.
_NEEDS_QUOTES = r'[",\r\n]'


def arrow_schema(ds: Dataset) -> pa.Schema:
    """The typed Parquet schema of a dataset (every field nullable: bad rows may hold nulls)."""
    return pa.schema([pa.field(c.name, _ARROW_TYPES[c.kind]) for c in ds.columns])


def string_schema(ds: Dataset) -> pa.Schema:
    """The all-string schema a CSV file is assembled in."""
    return pa.schema([pa.field(c.name, pa.string()) for c in ds.columns])


def decimal_from_cents(cents: np.ndarray) -> pa.Array:
    """A decimal128(10, 2) array from integer cents (vectorized, no Python Decimals)."""
    cents = np.asarray(cents, dtype=np.int64)
    words = np.empty((len(cents), 2), dtype=np.int64)
    words[:, 0] = cents
    words[:, 1] = np.where(cents < 0, -1, 0)
    return pa.Array.from_buffers(
        pa.decimal128(10, 2), len(cents), [None, pa.py_buffer(words.tobytes())]
    )


EPOCH_ORDINAL = 719163  # datetime.date(1970, 1, 1).toordinal()


def dates_from_ordinals(ordinals: np.ndarray) -> pa.Array:
    """A date32 array from proleptic Gregorian ordinals (``datetime.date.toordinal``)."""
    days = (np.asarray(ordinals, dtype=np.int64) - EPOCH_ORDINAL).astype(np.int32)
    return pa.array(days, type=pa.int32()).cast(pa.date32())


def timestamps_from_us(us: np.ndarray) -> pa.Array:
    """A timestamp[us, UTC] array from microseconds since the epoch."""
    return pa.array(np.asarray(us, dtype=np.int64), type=pa.timestamp("us", tz="UTC"))


def _timestamp_text(col: pa.Array) -> pa.Array:
    naive = pc.cast(col, pa.timestamp("us"))
    ms = pc.cast(naive, pa.timestamp("ms"), safe=False)  # values are whole milliseconds
    text = pc.replace_substring(pc.cast(ms, pa.string()), " ", "T", max_replacements=1)
    return pc.binary_join_element_wise(text, pa.scalar("Z"), "", null_handling="emit_null")


def to_strings(table: pa.Table, ds: Dataset) -> pa.Table:
    """Render a typed table as the CSV text of each cell (nulls stay null)."""
    cols = []
    for col in ds.columns:
        arr = table.column(col.name).combine_chunks()
        if col.kind is Kind.TIMESTAMP:
            cols.append(_timestamp_text(arr))
        elif col.kind is Kind.STRING:
            cols.append(arr)
        else:
            cols.append(pc.cast(arr, pa.string()))
    return pa.Table.from_arrays(cols, schema=string_schema(ds))


def _quote(arr: pa.Array) -> pa.Array:
    needs = pc.fill_null(pc.match_substring_regex(arr, _NEEDS_QUOTES), False)
    if not pc.any(needs).as_py():
        return arr
    quoted = pc.binary_join_element_wise(
        pa.scalar('"'), pc.replace_substring(arr, '"', '""'), pa.scalar('"'), ""
    )
    return pc.if_else(needs, quoted, arr)


def csv_bytes(text: pa.Table) -> bytes:
    """The CSV file content (header + rows, ``\\n`` line ends) of an all-string table."""
    header = ",".join(text.column_names) + "\n"
    if text.num_rows == 0:
        return header.encode("utf-8")
    cols = [_quote(text.column(i).combine_chunks()) for i in range(text.num_columns)]
    cols[-1] = pc.binary_join_element_wise(
        cols[-1], pa.scalar("\n"), "", null_handling="replace", null_replacement=""
    )
    lines = pc.binary_join_element_wise(*cols, ",", null_handling="replace", null_replacement="")
    lines = pc.cast(lines, pa.large_string())
    offsets = np.frombuffer(lines.buffers()[1], dtype=np.int64)
    offsets = offsets[lines.offset : lines.offset + len(lines) + 1]
    body = memoryview(lines.buffers()[2])[offsets[0] : offsets[-1]]
    return header.encode("utf-8") + bytes(body)


def _atomic_write(path: Path, writer) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    writer(tmp)
    os.replace(tmp, path)


def write_table(table: pa.Table, path: Path, fmt: str) -> None:
    """Write one landing file (typed table for Parquet, string table for CSV), atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == PARQUET:
        _atomic_write(path, lambda p: pq.write_table(table, p, compression="snappy"))
    elif fmt == CSV:
        data = csv_bytes(table)
        _atomic_write(path, lambda p: p.write_bytes(data))
    else:
        raise ValueError(f"unknown file format {fmt!r}")


def empty_table(ds: Dataset) -> pa.Table:
    """A typed table of the dataset with no rows."""
    return arrow_schema(ds).empty_table()
