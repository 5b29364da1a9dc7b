"""Ingest one landing day into the warehouse (the ``ingest_daily`` DAG and ``encore ingest``).

For a day D, every file of every dataset is read in bounded batches, every row is checked
against the contract (:mod:`ml_tasks.contract`), accepted rows are COPYed into staging
tables and rejected rows, with all their reasons and the original payload, into a staging
quarantine table. Duplicates are settled in SQL. Then one transaction swaps the day in:
event partitions are exchanged, dimension versions replaced and current rows refreshed,
the day's quarantine rows and ingest log replaced. A failure anywhere before that commit
leaves the warehouse as it was.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import logging
import re
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from psycopg import sql

from ml_tasks import allocation, contract, warehouse
from ml_tasks.contract import Column, Dataset, Kind
from ml_tasks.settings import get_settings

log = logging.getLogger(__name__)

#: In-memory types while checking: the landing types, but amounts as float64 (checked to
#: two decimals, loaded into numeric(10,2)).
ARROW_TYPES: dict[Kind, pa.DataType] = {
    **{kind: contract.landing_arrow_type(kind) for kind in Kind},
    Kind.DECIMAL: pa.float64(),
}
_TRUE = ["true", "t", "1", "yes", "y"]
_FALSE = ["false", "f", "0", "no", "n"]
_OFFSET_RE = r"(Z|z|[+-]\d{2}(:?\d{2})?)$"
_ISO_TIMESTAMP_RE = (
    r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|z|[+-]\d{2}(:?\d{2})?)$"
)


class IngestError(RuntimeError):
    """Ingestion of a day was refused; nothing of that day was written."""


class LandingIncomplete(IngestError):
    """Some dataset folders of the day have no ``_SUCCESS`` marker yet."""

    def __init__(self, day: date, missing: list[Path]):
        self.day = day
        self.missing = missing
        names = ", ".join(str(p) for p in missing)
        super().__init__(
            f"landing day {day} is not complete: no {contract.SUCCESS_MARKER} in {names}"
        )


class UnreadableColumn(ValueError):
    """A column whose values cannot be read as their contract type at all (a nested
    Parquet type, a binary column that is not UTF-8): the whole file is unreadable."""

    def __init__(self, column: str, problem: str):
        self.column = column
        super().__init__(f"column {column}: {problem}")


class UnreadableFile(IngestError):
    """A landing file could not be read at all."""

    def __init__(self, path: Path, problem: str):
        self.path = path
        self.problem = problem
        super().__init__(f"cannot read {path}: {problem}")


# --------------------------------------------------------------------------- landing layout


def day_folder(root: Path, dataset: str, day: date) -> Path:
    return root / dataset / f"dt={day.isoformat()}"


def missing_markers(
    day: date, root: Path | None = None, datasets: tuple[Dataset, ...] = contract.DATASETS
) -> list[Path]:
    """Dataset folders of ``day`` that do not (yet) hold a ``_SUCCESS`` marker."""
    root = root or get_settings().landing_root
    return [
        day_folder(root, ds.name, day)
        for ds in datasets
        if not (day_folder(root, ds.name, day) / contract.SUCCESS_MARKER).is_file()
    ]


def landing_files(folder: Path) -> list[Path]:
    """The data files of a dataset-day folder, sorted; refuses files of other kinds.

    Hidden files and markers (names starting with ``.`` or ``_``) are not data.
    """
    files: list[Path] = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith((".", "_")) or path.is_dir():
            continue
        if path.suffix.lower() not in contract.FILE_SUFFIXES:
            raise UnreadableFile(
                path, "not a .parquet or .csv file (the contract allows only those)"
            )
        files.append(path)
    return files


# --------------------------------------------------------------------------- reading


@dataclass
class FileStats:
    dataset: str
    source_file: str
    file_format: str
    file_bytes: int
    file_sha256: str
    rows_read: int = 0
    rows_accepted: int = 0
    rows_quarantined: int = 0


def _sha256(path: Path) -> str:
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _csv_header(path: Path) -> list[str]:
    try:
        with path.open("r", encoding="utf-8-sig", newline="") as fh:
            header = next(csv.reader(fh), None)
    except UnicodeDecodeError as exc:
        raise UnreadableFile(path, f"not valid UTF-8 ({exc.reason} at byte {exc.start})") from exc
    if not header:
        raise UnreadableFile(path, "empty file: no header row")
    return header


def _check_columns(path: Path, ds: Dataset, names: list[str]) -> None:
    missing = [c for c in ds.column_names if c not in names]
    if missing:
        raise UnreadableFile(path, f"missing required column(s) {', '.join(missing)}")
    extra = [c for c in names if c not in ds.column_names]
    if extra:
        log.warning("%s: ignoring unknown column(s) %s", path, ", ".join(extra))


def iter_batches(path: Path, ds: Dataset, chunk_rows: int) -> Iterator[pa.Table]:
    """Yield the file's rows as Arrow tables of at most about ``chunk_rows`` rows.

    CSV columns are read as text (parsed later, row by row in effect, so one bad value
    quarantines one row); Parquet columns keep their stored types.
    """
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            try:
                pfile = pq.ParquetFile(path)
            except (pa.ArrowInvalid, OSError) as exc:
                raise UnreadableFile(path, f"not a readable Parquet file ({exc})") from exc
            names = pfile.schema_arrow.names
            _check_columns(path, ds, names)
            if len(set(names)) != len(names):
                raise UnreadableFile(path, "duplicate column names in the schema")
            for batch in pfile.iter_batches(batch_size=chunk_rows):
                yield pa.Table.from_batches([batch])
        else:
            header = _csv_header(path)
            _check_columns(path, ds, header)
            if len(set(header)) != len(header):
                raise UnreadableFile(path, "duplicate column names in the header")
            block = int(min(max(chunk_rows * 120, 1 << 20), 256 << 20))
            reader = pacsv.open_csv(
                path,
                read_options=pacsv.ReadOptions(block_size=block),
                parse_options=pacsv.ParseOptions(newlines_in_values=True),
                convert_options=pacsv.ConvertOptions(
                    column_types={name: pa.string() for name in header},
                    strings_can_be_null=True,
                    null_values=[""],
                ),
            )
            for batch in reader:
                yield pa.Table.from_batches([batch])
    except UnreadableFile:
        raise
    except (pa.ArrowInvalid, pa.ArrowException, OSError, UnicodeDecodeError) as exc:
        problem = str(exc).splitlines()[0]
        if "UTF8" in problem or "utf-8" in problem.lower():
            problem = f"not valid UTF-8 ({problem})"
        elif "straddl" in problem:
            problem = (
                "a row is longer than the CSV read block (a huge field?); raise"
                f" ENCORE_INGEST_CHUNK_ROWS (now {chunk_rows}) to read it ({problem})"
            )
        raise UnreadableFile(path, problem) from exc


# --------------------------------------------------------------------------- parsing


_HASH_BASE = np.uint64(0x100000001B3)
_HASH_POWERS = np.cumprod(np.full(4096, _HASH_BASE, dtype=np.uint64), dtype=np.uint64)


def string_hashes(arr: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """64-bit hashes of non-null strings, computed from Arrow's buffers with numpy.

    A polynomial hash per string (sum of (byte + 1) x base^position, mod 2^64) and a
    murmur-style finaliser, over at most the first 4096 bytes of each string. Used only to
    find duplicate *candidates*, which are then compared exactly, so a collision costs a
    lookup, never a wrong answer. The hashes are stored (``event_key``): changing the
    function would strand every key already kept.
    """
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if pa.types.is_large_string(arr.type):
        arr = arr.cast(pa.string())
    n = len(arr)
    if n == 0:
        return np.zeros(0, dtype=np.uint64)
    offsets = _string_offsets(arr)
    data = np.frombuffer(arr.buffers()[2], dtype=np.uint8)
    lengths = np.diff(offsets)
    distinct = np.unique(lengths)
    if len(distinct) <= _HASH_MAX_LENGTHS:
        h = _polynomial_by_length(data, offsets, lengths, distinct)
    else:
        h = _polynomial_by_byte(data, offsets, lengths)
    with np.errstate(over="ignore"):
        h ^= lengths.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
        h ^= h >> np.uint64(33)
        h *= np.uint64(0xFF51AFD7ED558CCD)
        h ^= h >> np.uint64(33)
        h *= np.uint64(0xC4CEB9FE1A85EC53)
        h ^= h >> np.uint64(33)
    return h


#: above this many distinct string lengths in a batch, hash byte by byte instead
_HASH_MAX_LENGTHS = 32


def _polynomial_by_length(
    data: np.ndarray, offsets: np.ndarray, lengths: np.ndarray, distinct: np.ndarray
) -> np.ndarray:
    """The polynomial part of :func:`string_hashes`, for strings of few distinct lengths
    (ids usually have one): the strings of each length form a matrix of bytes, and a
    matrix-vector product with the powers sums each row. 5x faster than per byte."""
    h = np.zeros(len(lengths), dtype=np.uint64)
    for length in distinct.tolist():
        width = min(length, len(_HASH_POWERS))
        if width == 0:
            continue
        if len(distinct) == 1 and width == length:  # one length: the bytes are the matrix
            rows = slice(None)
            cells = data[offsets[0] : offsets[-1]].reshape(-1, width)
        else:
            rows = np.flatnonzero(lengths == length)
            cells = data[offsets[rows][:, None] + np.arange(width)]
        with np.errstate(over="ignore"):
            h[rows] = (cells.astype(np.uint64) + np.uint64(1)) @ _HASH_POWERS[:width]
    return h


def _polynomial_by_byte(data: np.ndarray, offsets: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The polynomial part of :func:`string_hashes` for strings of any lengths:
    ``np.add.reduceat`` over byte x power."""
    starts = offsets[:-1]
    span = data[offsets[0] : offsets[-1]].astype(np.uint64) + np.uint64(1)
    position = np.arange(len(span)) - np.repeat(starts - offsets[0], lengths)
    # Bytes past the first 4096 of a (huge) string do not count; its length still does.
    beyond = position >= len(_HASH_POWERS)
    h = np.zeros(len(lengths), dtype=np.uint64)
    with np.errstate(over="ignore"):
        terms = span * _HASH_POWERS[np.minimum(position, len(_HASH_POWERS) - 1)]
        terms[beyond] = 0
        nonempty = lengths > 0
        h[nonempty] = np.add.reduceat(terms, (starts - offsets[0])[nonempty])
    return h


def _mask(arr: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A boolean Arrow array (nulls = False) as numpy."""
    return np.asarray(pc.fill_null(arr, False).to_numpy(zero_copy_only=False), dtype=bool)


def _string_offsets(arr: pa.Array) -> np.ndarray:
    """A string array's ``len(arr) + 1`` value offsets into its data buffer (a view)."""
    return np.frombuffer(arr.buffers()[1], dtype=np.int32)[arr.offset : arr.offset + len(arr) + 1]


def _string_bytes(arr: pa.Array) -> np.ndarray:
    """The UTF-8 bytes of a string array's values (nulls hold none), without a copy."""
    offsets = _string_offsets(arr)
    data = arr.buffers()[2]
    if data is None or len(offsets) == 0:
        return np.zeros(0, np.uint8)
    return np.frombuffer(data, dtype=np.uint8)[offsets[0] : offsets[-1]]


def _rows_holding(arr: pa.Array, marked: np.ndarray) -> np.ndarray:
    """Per value of a string array: whether any of its bytes is marked in ``marked`` (256
    bools). One pass over the bytes; nulls give False."""
    hits = np.flatnonzero(marked[_string_bytes(arr)])
    rows = np.zeros(len(arr), dtype=bool)
    if len(hits):
        offsets = _string_offsets(arr)
        rows[np.searchsorted(offsets[1:] - offsets[0], hits, side="right")] = True
        if arr.null_count:
            rows &= ~_mask(arr.is_null())
    return rows


def _distinct(arr: pa.Array) -> tuple[pa.Array, np.ndarray]:
    """``(distinct values, code of each row)``; a null row's code is ``len(values)``. For
    columns of few distinct values (flags, categories): a test of the values, spread over
    the rows by :func:`_spread`, saves string work on every row."""
    encoded = arr.dictionary_encode()
    return encoded.dictionary, encoded.indices.fill_null(len(encoded.dictionary)).to_numpy()


def _spread(per_value: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """A bool per distinct value (see :func:`_distinct`) as a bool per row; nulls False."""
    return np.append(np.asarray(per_value, dtype=bool), False)[codes]


#: bytes outside a plain decimal integer: Arrow's cast decides values without them
#: (with them it would also take hex, and refuse a '+' the contract allows)
_NOT_DECIMAL = np.ones(256, dtype=bool)
_NOT_DECIMAL[list(b"0123456789-")] = False
#: the NUL byte, which PostgreSQL text cannot hold
_NUL = np.zeros(256, dtype=bool)
_NUL[0] = True


def parse_column(arr: pa.Array, kind: Kind) -> tuple[pa.Array, np.ndarray]:
    """Cast a column to its contract type; returns (typed array, mask of unparseable values).

    Unparseable values become nulls in the typed array and are flagged in the mask.
    """
    target = ARROW_TYPES[kind]
    n = len(arr)
    no_bad = np.zeros(n, dtype=bool)
    is_number = (
        pa.types.is_floating(arr.type)
        or pa.types.is_integer(arr.type)
        or pa.types.is_decimal(arr.type)
    )
    if kind is Kind.DECIMAL and is_number:  # NaN, infinities and sub-cent digits are bad
        present = ~_mask(arr.is_null())
        return _two_decimals(pc.cast(arr, pa.float64(), safe=False), present)
    if kind is Kind.BOOL and (pa.types.is_integer(arr.type) or pa.types.is_floating(arr.type)):
        # 0 and 1 only, as in CSV (a cast would make 2, 0.5 and NaN true)
        as_float = pc.cast(arr, pa.float64(), safe=False)
        bit = _mask(pc.is_in(as_float, value_set=pa.array([0.0, 1.0])))
        values = pc.if_else(pa.array(bit), pc.equal(as_float, 1.0), pa.scalar(None, target))
        return values, ~_mask(arr.is_null()) & ~bit
    if arr.type == target:
        return arr, no_bad
    is_text = pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)
    if not is_text:
        if pa.types.is_timestamp(arr.type) and kind is Kind.TIMESTAMP:
            if arr.type.tz is None:  # Parquet without a zone: the contract says UTC
                arr = pc.assume_timezone(arr, "UTC")
            return pc.cast(arr, target, safe=False), no_bad
        if kind is Kind.DATE and (pa.types.is_timestamp(arr.type) or pa.types.is_date(arr.type)):
            return pc.cast(arr, target, safe=False), no_bad
        try:
            return pc.cast(arr, target, safe=True), no_bad
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            arr = pc.cast(arr, pa.string())
    arr = pc.cast(arr, pa.string()) if pa.types.is_large_string(arr.type) else arr
    present = ~_mask(arr.is_null())

    if kind is Kind.STRING:
        return arr, no_bad
    if kind is Kind.BOOL:
        # a flag column holds a handful of spellings: each is lowered and looked up once
        words, codes = _distinct(arr)
        low = pc.utf8_lower(pc.utf8_trim_whitespace(words))
        is_true = _spread(_mask(pc.is_in(low, value_set=pa.array(_TRUE))), codes)
        is_false = _spread(_mask(pc.is_in(low, value_set=pa.array(_FALSE))), codes)
        bad = present & ~(is_true | is_false)
        values = pa.array(is_true, mask=~(is_true | is_false))
        return values, bad
    if kind is Kind.TIMESTAMP:
        return _parse_timestamps(arr, present)
    if kind is Kind.DATE:
        shaped = _mask(pc.match_substring_regex(arr, r"^\d{4}-\d{2}-\d{2}$"))
        try:
            values = pc.cast(
                pc.if_else(pa.array(shaped), arr, pa.scalar(None, pa.string())), target
            )
            return values, present & ~shaped
        except pa.ArrowInvalid:
            pass
        parsed = pd.to_datetime(
            pd.Series(arr.to_numpy(zero_copy_only=False)), errors="coerce", format="%Y-%m-%d"
        )
        ok = parsed.notna().to_numpy()
        values = pa.array(parsed.dt.date.where(ok, None), type=target, from_pandas=True)
        return values, present & ~ok
    # numbers
    if kind.is_integer:
        return _parse_integers(arr, kind, present)
    # decimal(10,2) as float64, 2 decimals at most
    nums = pd.to_numeric(pd.Series(arr.to_numpy(zero_copy_only=False)), errors="coerce")
    return _two_decimals(pa.array(nums.to_numpy(dtype=float), pa.float64()), present)


def _parse_timestamps(arr: pa.Array, present: np.ndarray) -> tuple[pa.Array, np.ndarray]:
    """ISO 8601 text with an offset to UTC timestamps, the others flagged bad: the shape
    pattern and Arrow's cast, else pandas."""
    target = ARROW_TYPES[Kind.TIMESTAMP]
    # Cast only well-formed values, so one bad value does not send the batch to pandas.
    # The pattern is anchored and ends with the offset, so a match has one.
    shaped = _mask(pc.match_substring_regex(arr, _ISO_TIMESTAMP_RE))
    try:
        values = pc.cast(pc.if_else(pa.array(shaped), arr, pa.scalar(None, pa.string())), target)
        return values, present & ~shaped
    except pa.ArrowInvalid:
        pass
    has_offset = _mask(pc.match_substring_regex(pc.utf8_trim_whitespace(arr), _OFFSET_RE))
    parsed = pd.to_datetime(
        pd.Series(arr.to_numpy(zero_copy_only=False)),
        utc=True,
        errors="coerce",
        format="ISO8601",
    )
    ok = parsed.notna().to_numpy() & has_offset
    # nanosecond digits are dropped: the warehouse keeps microseconds
    values = pa.array(parsed.where(ok).dt.floor("us"), type=target, from_pandas=True)
    return values, present & ~ok


def _parse_integers(arr: pa.Array, kind: Kind, present: np.ndarray) -> tuple[pa.Array, np.ndarray]:
    """Text to an integer column. A value is an optional sign and decimal digits (no
    spaces, no decimal point) within the kind's range; anything else is flagged bad.

    Values of digits and minus signs alone (nearly all) are cast exactly in one go; the
    few others go through :func:`_parse_integers_slowly`, which gives each value the
    same verdict, so no value's verdict depends on the rest of its batch.
    """
    odd = _rows_holding(arr, _NOT_DECIMAL)
    plain = pc.if_else(pa.array(odd), pa.scalar(None, pa.string()), arr) if odd.any() else arr
    try:
        exact = pc.cast(plain, pa.int64()).fill_null(0).to_numpy(zero_copy_only=False)
    except pa.ArrowInvalid:  # a lone '-', '1-2', or past int64: every value the slow way
        return _parse_integers_slowly(arr, kind, present)
    ok = present & ~odd
    if odd.any():
        values, _ = _parse_integers_slowly(arr.filter(pa.array(odd)), kind, present[odd])
        exact = exact.copy()  # Arrow's buffer is read-only
        exact[odd] = values.cast(pa.int64()).fill_null(0).to_numpy(zero_copy_only=False)
        ok[odd] = _mask(values.is_valid())
    return _in_range(exact, ok, kind, present)


def _in_range(
    exact: np.ndarray, ok: np.ndarray, kind: Kind, present: np.ndarray
) -> tuple[pa.Array, np.ndarray]:
    """Parsed integers (``ok`` where read) held to the kind's range: the typed column, with
    nulls where not ok, and the mask of bad values."""
    low, high = contract.INT_BOUNDS[kind]
    ok = ok & (exact >= low) & (exact <= high)
    return pc.cast(pa.array(np.where(ok, exact, 0), mask=~ok), ARROW_TYPES[kind]), present & ~ok


def _parse_integers_slowly(
    arr: pa.Array, kind: Kind, present: np.ndarray
) -> tuple[pa.Array, np.ndarray]:
    """:func:`_parse_integers` value by value, for values of any shape."""
    shaped = _mask(pc.match_substring_regex(arr, r"^[+-]?\d+$"))
    unsigned = pc.replace_substring_regex(arr, r"^\+", "")  # Arrow's cast refuses a '+'
    # More than 18 digits may not fit int64 (and would fail the whole cast): Python's int
    # reads those few one by one.
    long = shaped & _mask(pc.match_substring_regex(arr, r"\d{19}"))
    exact = (
        pc.cast(
            pc.if_else(pa.array(shaped & ~long), unsigned, pa.scalar(None, pa.string())), pa.int64()
        )
        .fill_null(0)
        .to_numpy(zero_copy_only=False)
        .copy()
    )
    ok = shaped & ~long
    for i in np.flatnonzero(long).tolist():
        text = unsigned[i].as_py()
        digits = text.lstrip("-").lstrip("0") or "0"
        if len(digits) <= 19:  # longer is out of range (and past int()'s digit limit)
            value = -int(digits) if text.startswith("-") else int(digits)
            if -(2**63) <= value < 2**63:
                exact[i], ok[i] = value, True
    return _in_range(exact, ok, kind, present)


def _two_decimals(nums: pa.Array, present: np.ndarray) -> tuple[pa.Array, np.ndarray]:
    """Finite numbers with at most two decimals, as float64; the others flagged bad."""
    nums_f = np.asarray(pc.fill_null(nums, np.nan).to_numpy(zero_copy_only=False), dtype=float)
    with np.errstate(invalid="ignore", over="ignore"):
        cents = nums_f * 100
        ok = present & np.isfinite(cents) & (np.abs(cents - np.round(cents)) < 1e-6)
    values = pa.array(np.where(ok, np.round(np.where(ok, cents, 0.0)) / 100, 0.0), mask=~ok)
    return values, present & ~ok


@dataclass
class CheckedBatch:
    """A batch split into accepted typed rows and rejected rows with reasons."""

    accepted: pa.Table
    rejected_rows: np.ndarray
    reasons: list[list[str]]


def _cross_rule_mask(code: str, typed: dict[str, pa.Array]) -> np.ndarray:
    if code == "ms_played_over_duration":
        limit = pc.multiply(
            pc.cast(typed["track_duration_ms"], pa.int64()), contract.MAX_PLAY_TO_DURATION_RATIO
        )
        return _mask(pc.greater(pc.cast(typed["ms_played"], pa.int64()), limit))
    if code == "free_plan_amount":
        return _mask(pc.and_(pc.equal(typed["plan"], "free"), pc.not_equal(typed["amount"], 0.0)))
    raise KeyError(f"no check implemented for cross rule {code!r}")


def _column_masks(
    col: Column, arr: pa.Array, day: date, now: datetime
) -> list[tuple[str, np.ndarray]]:
    msgs = contract.rule_messages(col)
    masks: list[tuple[str, np.ndarray]] = []
    if col.non_empty:
        masks.append((msgs["empty"], _mask(pc.equal(pc.utf8_trim_whitespace(arr), ""))))
    if col.minimum is not None:
        op = pc.less_equal if col.minimum_exclusive else pc.less
        masks.append((msgs["min"], _mask(op(arr, col.minimum))))
    if col.maximum is not None:
        masks.append((msgs["max"], _mask(pc.greater(arr, col.maximum))))
    if col.allowed is not None:  # a category: each distinct value is looked up once
        values, codes = _distinct(arr)
        unknown = ~_mask(pc.is_in(values, value_set=pa.array(col.allowed)))
        masks.append((msgs["allowed"], _spread(unknown, codes)))
    if col.pattern is not None:
        masks.append(
            (msgs["pattern"], _mask(pc.invert(pc.match_substring_regex(arr, col.pattern))))
        )
    if col.in_day:
        low = pa.scalar(datetime.combine(day, datetime.min.time(), UTC), ARROW_TYPES[col.kind])
        high = pa.scalar(
            datetime.combine(day + timedelta(days=1), datetime.min.time(), UTC),
            ARROW_TYPES[col.kind],
        )
        masks.append(
            (msgs["in_day"], _mask(pc.or_(pc.less(arr, low), pc.greater_equal(arr, high))))
        )
    if col.not_future:
        masks.append(
            (msgs["future"], _mask(pc.greater(arr, pa.scalar(now, ARROW_TYPES[col.kind]))))
        )
    if col.not_after_day:
        masks.append((msgs["after_day"], _mask(pc.greater(arr, pa.scalar(day, pa.date32())))))
    if col.birth_year:
        top = day.year - contract.MIN_USER_AGE_YEARS
        masks.append(
            (
                msgs["birth_year"],
                _mask(pc.or_(pc.less(arr, contract.MIN_BIRTH_YEAR), pc.greater(arr, top))),
            )
        )
    if col.relative_path:
        under_audio = pc.match_substring_regex(arr, contract.AUDIO_PATH_PATTERN)
        dotdot = pc.match_substring_regex(arr, contract.PARENT_DIR_PATTERN)
        masks.append((msgs["path"], _mask(pc.or_(pc.invert(under_audio), dotdot))))
    return masks


def check_batch(ds: Dataset, batch: pa.Table, day: date, now: datetime) -> CheckedBatch:
    """Check every row of ``batch`` against the contract for landing day ``day``."""
    masks: list[tuple[str, np.ndarray]] = []
    typed: dict[str, pa.Array] = {}
    for col in ds.columns:
        raw = batch.column(col.name).combine_chunks()
        try:
            values, bad_type = parse_column(raw, col.kind)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            problem = str(exc).splitlines()[0]
            if "UTF8" in problem:
                problem = f"not valid UTF-8 ({problem})"
            raise UnreadableColumn(
                col.name, f"{raw.type} values cannot be read as {col.kind.name.lower()} ({problem})"
            ) from exc
        msgs = contract.rule_messages(col)
        masks.append((msgs["type"], bad_type))
        if col.kind is Kind.STRING:  # PostgreSQL text cannot hold NUL
            masks.append((msgs["nul"], _rows_holding(values, _NUL)))
        if not col.nullable:
            masks.append((msgs["missing"], _mask(values.is_null()) & ~bad_type))
        masks.extend(_column_masks(col, values, day, now))
        typed[col.name] = values
    for rule in ds.cross_rules:
        masks.append((rule.message, _cross_rule_mask(rule.code, typed)))
    bad = np.logical_or.reduce([m for _, m in masks]) if masks else np.zeros(batch.num_rows, bool)
    bad_idx = np.flatnonzero(bad)
    reasons: list[list[str]] = [[] for _ in bad_idx]
    for message, mask in masks:
        for j in np.flatnonzero(mask[bad_idx]):
            reasons[j].append(message)
    accepted = pa.table(typed).filter(pa.array(~bad))
    return CheckedBatch(accepted, bad_idx, reasons)


# --------------------------------------------------------------------------- the day


@dataclass
class DatasetResult:
    dataset: str
    files: list[FileStats] = field(default_factory=list)

    @property
    def rows_read(self) -> int:
        return sum(f.rows_read for f in self.files)

    @property
    def rows_accepted(self) -> int:
        return sum(f.rows_accepted for f in self.files)

    @property
    def rows_quarantined(self) -> int:
        return sum(f.rows_quarantined for f in self.files)


@dataclass
class IngestResult:
    day: date
    run_id: str
    datasets: dict[str, DatasetResult]
    seconds: float

    @property
    def rows_read(self) -> int:
        return sum(d.rows_read for d in self.datasets.values())

    @property
    def rows_accepted(self) -> int:
        return sum(d.rows_accepted for d in self.datasets.values())

    @property
    def rows_quarantined(self) -> int:
        return sum(d.rows_quarantined for d in self.datasets.values())

    def to_dict(self) -> dict:
        return {
            "day": self.day.isoformat(),
            "run_id": self.run_id,
            "seconds": round(self.seconds, 3),
            "rows_read": self.rows_read,
            "rows_accepted": self.rows_accepted,
            "rows_quarantined": self.rows_quarantined,
            "datasets": {
                name: {
                    "files": len(res.files),
                    "rows_read": res.rows_read,
                    "rows_accepted": res.rows_accepted,
                    "rows_quarantined": res.rows_quarantined,
                }
                for name, res in self.datasets.items()
            },
        }


def _stage_name(ds: Dataset, day: date) -> str:
    return f"raw._stage_{ds.name}_{day:%Y%m%d}"


def _quarantine_stage(day: date) -> str:
    return f"quarantine._stage_rejected_{day:%Y%m%d}"


def _pg_array(items: list[str]) -> str:
    escaped = (s.replace("\\", "\\\\").replace('"', '\\"') for s in items)
    return "{" + ",".join(f'"{s}"' for s in escaped) + "}"


def _jsonb_safe(value: object) -> object:
    """A payload value jsonb can hold: NaN and infinities as text, NUL as ``\\u0000`` text."""
    if isinstance(value, float) and not np.isfinite(value):
        return str(value)  # 'nan', 'inf', '-inf'
    if isinstance(value, str) and "\x00" in value:
        return value.replace("\x00", "\\u0000")
    if isinstance(value, list):
        return [_jsonb_safe(v) for v in value]
    if isinstance(value, dict):
        return {_jsonb_safe(k): _jsonb_safe(v) for k, v in value.items()}
    return value


def _payload(row: dict) -> str:
    """One rejected row as jsonb text. Most rows need no rewriting, so each is dumped as it
    is; only a row json refuses (NaN, infinities) or whose text came out with a NUL escape
    is dumped again through :func:`_jsonb_safe`. For every other row that gives the same
    text as rewriting first, without walking its values."""
    try:
        text = json.dumps(row, default=str, ensure_ascii=False, allow_nan=False)
    except ValueError:
        text = None
    if text is None or "\\u0000" in text:
        text = json.dumps(_jsonb_safe(row), default=str, ensure_ascii=False, allow_nan=False)
    return text


def _payloads(batch: pa.Table, rows: np.ndarray) -> list[str]:
    return [_payload(r) for r in batch.take(pa.array(rows)).to_pylist()]


def _merge_sorted(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two ascending arrays of distinct int64 keys: ``(their union, the keys in both)``,
    ascending. numpy's stable sort (timsort) merges two sorted runs in linear time, and a
    key in both then sits next to itself: 4.9 ms for 400,000 keys each, against 12.6 ms
    for a binary search of each key."""
    merged = np.concatenate([a, b])
    merged.sort(kind="stable")
    twice = merged[1:] == merged[:-1]
    common = merged[1:][twice]
    if len(common):
        merged = merged[np.concatenate(([True], ~twice))]
    return merged, common


class _DayLoader:
    """Loads one landing day into staging tables on one connection."""

    def __init__(
        self,
        conn,
        day: date,
        root: Path,
        chunk_rows: int,
        now: datetime,
        digests: dict[Path, Future[str]],
    ):
        self.conn = conn
        self.digests = digests  # each landing file's SHA-256, computed on a thread
        self.day = day
        self.root = root
        self.chunk_rows = chunk_rows
        self.now = now
        self.known: dict[str, pa.Array] = {}
        self.known_masks: dict[str, tuple[int, np.ndarray] | None] = {}
        # The distinct 64-bit hashes of the day's accepted event ids so far, ascending as
        # int64 (8 bytes per event): rows whose hash was seen before are duplicate
        # *candidates*, settled exactly in SQL.
        self.seen: dict[str, np.ndarray] = {}
        self.candidates: dict[str, list[pa.Table]] = {}
        # rows the server reported COPYed into the stage, per source file
        self.copied: dict[str, int] = {}
        self.day_keys: dict[str, list[pa.Array]] = {"users": [], "tracks": []}
        # per event dataset: the distinct event keys of the day's settled stage, ascending
        self.key_runs: dict[str, np.ndarray] = {}

    # -- staging
    def create_stages(self) -> None:
        self.conn.execute(
            sql.SQL("DROP TABLE IF EXISTS {}").format(
                warehouse.qualified(_quarantine_stage(self.day))
            )
        )
        self.conn.execute(
            sql.SQL("CREATE UNLOGGED TABLE {} (LIKE quarantine.rejected_rows)").format(
                warehouse.qualified(_quarantine_stage(self.day))
            )
        )
        for ds in contract.DATASETS:
            stage = _stage_name(ds, self.day)
            if ds.is_event:
                warehouse.create_day_stage(self.conn, ds.raw_table, stage, ds.time_column, self.day)
            else:
                self.conn.execute(
                    sql.SQL("DROP TABLE IF EXISTS {}").format(warehouse.qualified(stage))
                )
                self.conn.execute(
                    sql.SQL("CREATE UNLOGGED TABLE {} (LIKE {})").format(
                        warehouse.qualified(stage), warehouse.qualified(ds.raw_table)
                    )
                )

    def drop_stages(self) -> None:
        names = [_stage_name(ds, self.day) for ds in contract.DATASETS] + [
            _quarantine_stage(self.day)
        ]
        for name in names:
            self.conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(warehouse.qualified(name)))

    # -- reference flags
    def _known_keys(self, ds_name: str) -> pa.Array:
        """Keys of ``users``/``tracks`` delivered up to this day (earlier days + today's)."""
        if ds_name not in self.known:
            table, key, arrow_type = (
                ("raw.users", "user_id", pa.int64())
                if ds_name == "users"
                else ("raw.tracks", "track_id", pa.string())
            )
            query = sql.SQL("SELECT {} FROM {} WHERE first_delivered < %s").format(
                sql.Identifier(key), warehouse.qualified(table)
            )
            if ds_name == "users":  # one bytea of ids: 0.06 s for 300,000 (a COPY: 0.45 s)
                before = pa.array(warehouse.read_int8_set(self.conn, query, (self.day,)))
            else:
                before = pa.array([r[0] for r in self.conn.execute(query, (self.day,))], arrow_type)
            todays = [a.cast(arrow_type) for a in self.day_keys[ds_name]]
            self.known[ds_name] = pc.unique(pa.concat_arrays([before, *todays]))
        return self.known[ds_name]

    def _known_id_mask(self, ds_name: str) -> tuple[int, np.ndarray] | None:
        """For integer keys packed densely enough (user ids): ``(lowest, mask)`` with
        ``mask[k - lowest]`` true for each known key k, built once a day. Looking a batch up
        in it costs a millisecond; ``pc.is_in`` hashes the whole value set on every call
        (0.58 s for the 26 batches of a 300,000-user day). None when the keys are too
        sparse for a mask of at most 64 bytes per key."""
        if ds_name not in self.known_masks:
            keys = self._known_keys(ds_name)
            mask = None
            if pa.types.is_integer(keys.type) and len(keys) and keys.null_count == 0:
                values = keys.to_numpy()
                lowest, span = int(values.min()), int(values.max()) - int(values.min()) + 1
                if span <= 64 * len(values):
                    bits = np.zeros(span, dtype=bool)
                    bits[values - lowest] = True
                    mask = (lowest, bits)
            self.known_masks[ds_name] = mask
        return self.known_masks[ds_name]

    def _flag_unknown(self, ds: Dataset, accepted: pa.Table) -> pa.Table:
        # Arrow's hash-based is_in: numpy's isin on strings degrades to a pairwise scan.
        for column, ref in ds.references:
            flag = "unknown_user" if ref == "users" else "unknown_track"
            values = accepted.column(column)
            dense = self._known_id_mask(ref)
            if dense is not None and values.null_count == 0 and pa.types.is_integer(values.type):
                lowest, bits = dense
                ids = values.to_numpy() - lowest
                inside = (ids >= 0) & (ids < len(bits))
                known = np.zeros(len(ids), dtype=bool)
                known[inside] = bits[ids[inside]]
                accepted = accepted.append_column(flag, pa.array(~known))
            else:
                known = pc.is_in(values, value_set=self._known_keys(ref))
                accepted = accepted.append_column(flag, pc.invert(pc.fill_null(known, False)))
        return accepted

    # -- loading
    def load_files(self, ds: Dataset, paths: list[Path]) -> list[FileStats]:
        """Load every file of ``ds`` into its stage.

        One COPY thread serves all the files, so reading the next file overlaps the last
        COPYs of the one before. An event stage is emptied and filled in one transaction
        with ``COPY FREEZE``: its rows land frozen and its pages all-visible, so the index
        build that follows does not first set a hint bit on every row, and VACUUM finds
        nothing to do.
        """
        freeze = ds.is_event
        with self.conn.transaction() if freeze else contextlib.nullcontext():
            if freeze:
                self.conn.execute(
                    sql.SQL("TRUNCATE {}").format(warehouse.qualified(_stage_name(ds, self.day)))
                )
            pipe = warehouse.CopyPipe()
            try:
                return [self._load_file(ds, path, pipe, freeze) for path in paths]
            finally:
                pipe.close()

    def _load_file(
        self, ds: Dataset, path: Path, pipe: warehouse.CopyPipe, freeze: bool
    ) -> FileStats:
        rel = path.relative_to(self.root).as_posix()
        stats = FileStats(
            ds.name,
            rel,
            path.suffix.lower().lstrip("."),
            path.stat().st_size,
            self.digests[path].result(),
        )
        stage = _stage_name(ds, self.day)
        qstage = _quarantine_stage(self.day)
        # The file name is the same for every row: a column default instead of CSV bytes.
        # The pipe runs jobs in order, so this file's COPYs follow it.
        set_default = sql.SQL("ALTER TABLE {} ALTER COLUMN source_file SET DEFAULT {}").format(
            warehouse.qualified(stage), sql.Literal(rel)
        )
        pipe.submit(lambda: self.conn.execute(set_default))
        try:
            self._load_batches(ds, path, rel, stage, qstage, stats, pipe, freeze)
        except UnreadableColumn as exc:
            raise UnreadableFile(path, str(exc)) from exc
        return stats

    def _load_batches(self, ds, path, rel, stage, qstage, stats, pipe, freeze) -> None:
        row_base = 0
        for batch in iter_batches(path, ds, self.chunk_rows):
            checked = check_batch(ds, batch, self.day, self.now)
            n = batch.num_rows
            rows = np.arange(row_base + 1, row_base + n + 1, dtype=np.int32)
            accepted = checked.accepted
            keep = np.ones(n, dtype=bool)
            keep[checked.rejected_rows] = False
            if ds.is_event:
                accepted = self._flag_unknown(ds, accepted)
            else:
                accepted = accepted.add_column(
                    0, "dt", pa.array(np.full(accepted.num_rows, self.day), pa.date32())
                )
                self.day_keys[ds.name].append(accepted.column(ds.key).combine_chunks())
            accepted = accepted.append_column("source_row", pa.array(rows[keep]))
            if ds.is_event:
                hashes = string_hashes(accepted.column(ds.key))
                accepted = accepted.append_column("event_key", pa.array(hashes.view(np.int64)))
                self._mark_candidates(ds, accepted, rel, hashes)
            binary = warehouse.binary_copy_safe(accepted.schema)
            pipe.submit(
                lambda t=accepted, b=binary: self._copied(
                    rel, warehouse.copy_arrow(self.conn, stage, t, binary=b, freeze=freeze)
                )
            )
            if len(checked.rejected_rows):
                k = len(checked.rejected_rows)
                rejected = pa.table(
                    {
                        "dataset": pa.array([ds.name] * k),
                        "dt": pa.array([self.day] * k, pa.date32()),
                        "source_file": pa.array([rel] * k),
                        "source_row": pa.array(rows[checked.rejected_rows]),
                        "reasons": pa.array([_pg_array(r) for r in checked.reasons]),
                        "payload": pa.array(_payloads(batch, checked.rejected_rows)),
                    }
                )
                pipe.submit(lambda t=rejected: warehouse.copy_arrow(self.conn, qstage, t))
            stats.rows_read += n
            row_base += n

    def _copied(self, rel: str, count: int) -> None:
        self.copied[rel] = self.copied.get(rel, 0) + count

    def _mark_candidates(
        self, ds: Dataset, accepted: pa.Table, rel: str, hashes: np.ndarray
    ) -> None:
        """Note rows whose id hash was already seen this day (or earlier in the batch)."""
        keys = hashes.view(np.int64)
        order = np.argsort(keys, kind="stable")  # equal keys keep their row order
        ordered = keys[order]
        first = np.ones(len(keys), dtype=bool)  # each key's first row in the batch
        np.not_equal(ordered[1:], ordered[:-1], out=first[1:])
        unique = ordered[first]
        run, common = _merge_sorted(self.seen.get(ds.name, np.zeros(0, np.int64)), unique)
        self.seen[ds.name] = run
        seen_before = np.isin(unique, common) if len(common) else np.zeros(len(unique), bool)
        repeat = np.empty(len(keys), dtype=bool)
        repeat[order] = ~first | seen_before[np.cumsum(first) - 1]
        if repeat.any():
            rows = pa.array(np.flatnonzero(repeat))
            self.candidates.setdefault(ds.name, []).append(
                pa.table(
                    {
                        "source_file": pa.array([rel] * len(rows)),
                        "source_row": accepted.column("source_row").take(rows),
                        "event_id": accepted.column(ds.key).take(rows),
                        "event_key": accepted.column("event_key").take(rows),
                    }
                )
            )

    def _quarantine_deleted(
        self, ds: Dataset, deleting: sql.Composable, reason: str
    ) -> dict[str, int]:
        """Run ``deleting`` (a ``WITH`` ending in CTE ``d``, a DELETE from the stage
        ``RETURNING s.*``) and move the deleted rows to the quarantine stage with ``reason``.
        Returns the rows removed per source file."""
        payload_cols = sql.SQL(", ").join(
            sql.SQL("{0}, d.{1}").format(sql.Literal(c), sql.Identifier(c)) for c in ds.column_names
        )
        query = deleting + sql.SQL(
            """, q AS (
                INSERT INTO {qstage} (dataset, dt, source_file, source_row, reasons, payload)
                SELECT {ds}, {day}, d.source_file, d.source_row, ARRAY[{reason}],
                       jsonb_build_object({payload_cols})
                FROM d RETURNING source_file
            )
            SELECT source_file, count(*) FROM q GROUP BY source_file"""
        ).format(
            qstage=warehouse.qualified(_quarantine_stage(self.day)),
            ds=sql.Literal(ds.name),
            day=sql.Literal(self.day),
            reason=sql.Literal(reason),
            payload_cols=payload_cols,
        )
        return dict(self.conn.execute(query).fetchall())

    def settle_event_duplicates(self, ds: Dataset) -> dict[str, int]:
        """Quarantine repeated event ids; returns the rows removed per source file.

        Within the day the first delivery (by file, then row) wins: only the candidates found
        by hash are checked, exactly, through the stage's event_key index. An id already
        accepted on another day is quarantined too.
        """
        stage = warehouse.qualified(_stage_name(ds, self.day))
        key = sql.Identifier(ds.key)
        removed: Counter[str] = Counter()
        candidates = self.candidates.get(ds.name)
        if candidates:
            self.conn.execute(
                "CREATE TEMP TABLE IF NOT EXISTS _candidates"
                " (source_file text, source_row integer, event_id text, event_key bigint)"
            )
            self.conn.execute("TRUNCATE _candidates")
            warehouse.copy_arrow(self.conn, "pg_temp._candidates", pa.concat_tables(candidates))
            self.conn.execute("ANALYZE pg_temp._candidates")
            deleting = sql.SQL(
                """
                WITH d AS (
                    DELETE FROM {stage} s USING _candidates c
                    WHERE s.event_key = c.event_key
                      AND s.{key} = c.event_id
                      AND s.source_file = c.source_file AND s.source_row = c.source_row
                      AND EXISTS (
                          SELECT 1 FROM {stage} o
                          WHERE o.event_key = s.event_key AND o.{key} = s.{key}
                            AND (o.source_file, o.source_row) < (s.source_file, s.source_row))
                    RETURNING s.*
                )"""
            ).format(stage=stage, key=key)
            removed.update(self._quarantine_deleted(ds, deleting, contract.DUPLICATE_REASON))
        # Already accepted on another day: the first day to accept an id keeps it. The day's
        # distinct keys are searched in every other day's sorted run (one row per day, read
        # in turn); the few found are then confirmed by exact id against the other days'
        # partitions (two ranges, not NOT(in day), so the planner prunes the day being
        # replaced).
        day_keys = self._day_key_run(ds)
        found = self._keys_in_other_days(ds, day_keys)
        self.conn.execute("DROP TABLE IF EXISTS _seen")
        self.conn.execute("CREATE TEMP TABLE IF NOT EXISTS _hits (event_key bigint)")
        self.conn.execute("TRUNCATE _hits")
        warehouse.copy_arrow(self.conn, "pg_temp._hits", pa.table({"event_key": found}))
        self.conn.execute("ANALYZE pg_temp._hits")
        self.conn.execute(
            sql.SQL(
                "CREATE TEMP TABLE _seen AS SELECT s.ctid AS tid, s.event_key,"
                " s.{key} AS event_id FROM {stage} s JOIN _hits h USING (event_key)"
            ).format(stage=stage, key=key)
        )
        # Statistics, or the planner takes the temp table for ~1,000 rows and confirms them
        # with a hash join over a scan of every other day's rows (11 s on 10M plays kept)
        # instead of a few probes of their event_key indexes.
        self.conn.execute("ANALYZE pg_temp._seen")
        low, high = warehouse.day_bounds(self.day)
        deleting = sql.SQL(
            """
            WITH d AS (
                DELETE FROM {stage} s USING _seen c
                WHERE s.ctid = c.tid
                  AND EXISTS (
                    SELECT 1 FROM {parent} r
                    WHERE r.event_key = c.event_key AND r.{key} = c.event_id
                      AND (r.{tcol} < {low} OR r.{tcol} >= {high})
                )
                RETURNING s.*
            )"""
        ).format(
            stage=stage,
            parent=warehouse.qualified(ds.raw_table),
            key=key,
            tcol=sql.Identifier(ds.time_column),
            low=sql.Literal(low),
            high=sql.Literal(high),
        )
        removed.update(
            self._quarantine_deleted(ds, deleting, contract.DUPLICATE_REASON + " on another day")
        )
        self.conn.execute("DROP TABLE _seen")
        # A key found elsewhere leaves the day's run only if none of its rows stayed (two ids
        # may share a hash): the run must hold every key of the partition.
        gone = self.conn.execute(
            sql.SQL(
                "SELECT h.event_key FROM _hits h"
                " WHERE NOT EXISTS (SELECT 1 FROM {stage} s WHERE s.event_key = h.event_key)"
            ).format(stage=stage)
        ).fetchall()
        if gone:
            day_keys = day_keys[~np.isin(day_keys, np.array([g for (g,) in gone], np.int64))]
        self.key_runs[ds.name] = day_keys
        return dict(removed)

    def _day_key_run(self, ds: Dataset) -> np.ndarray:
        """The distinct event keys COPYed into the day's stage, ascending as int64."""
        return self.seen.get(ds.name, np.zeros(0, np.int64))

    def _keys_in_other_days(self, ds: Dataset, day_keys: np.ndarray) -> np.ndarray:
        """Those of ``day_keys`` found in the sorted key run of any other day.

        Reads every other day's run (8 bytes a key kept) and merges it with the day's keys
        (:func:`_merge_sorted`). A fetch thread reads the next run while this one is merged.
        """
        found: list[np.ndarray] = []
        if len(day_keys) == 0:
            return np.zeros(0, np.int64)
        query = sql.SQL("SELECT event_keys FROM {} WHERE dt <> %s").format(
            warehouse.qualified(ds.key_runs_table)
        )
        for run in warehouse.stream_bytea(self.conn, query, (self.day,)):
            _, both = _merge_sorted(day_keys, np.frombuffer(run, dtype=">i8"))
            if len(both):
                found.append(both)
        return np.unique(np.concatenate(found)) if found else np.zeros(0, np.int64)

    def settle_key_duplicates(self, ds: Dataset) -> dict[str, int]:
        """Dimensions: a key repeated in one day's delivery keeps its last row (by file, then
        row); the others are quarantined. Returns the rows removed per source file."""
        deleting = sql.SQL(
            """
            WITH dup_keys AS (
                SELECT {key} FROM {stage} GROUP BY {key} HAVING count(*) > 1
            ), ranked AS (
                SELECT s.ctid AS tid, row_number() OVER (
                    PARTITION BY s.{key} ORDER BY source_file DESC, source_row DESC) AS rn
                FROM {stage} s JOIN dup_keys USING ({key})
            ), d AS (
                DELETE FROM {stage} s USING ranked r
                WHERE s.ctid = r.tid AND r.rn > 1
                RETURNING s.*
            )"""
        ).format(key=sql.Identifier(ds.key), stage=warehouse.qualified(_stage_name(ds, self.day)))
        return self._quarantine_deleted(
            ds, deleting, contract.DUPLICATE_KEY_REASON.format(key=ds.key)
        )

    def quarantined_by_file(self, ds: Dataset) -> dict[str, int]:
        """Rows of ``ds`` in the day's quarantine stage, per source file."""
        return dict(
            self.conn.execute(
                sql.SQL(
                    "SELECT source_file, count(*) FROM {} WHERE dataset = %s GROUP BY source_file"
                ).format(warehouse.qualified(_quarantine_stage(self.day))),
                (ds.name,),
            ).fetchall()
        )

    def index_event_stage(self, ds: Dataset) -> None:
        """Give the stage the parent's indexes: duplicate checks use them, ATTACH reuses them."""
        stage = _stage_name(ds, self.day)
        for (indexdef,) in self.conn.execute(
            "SELECT indexdef FROM pg_indexes WHERE schemaname = 'raw' AND tablename = %s",
            (ds.name,),
        ).fetchall():
            definition = re.sub(
                r"^CREATE (UNIQUE )?INDEX \S+ ON ONLY \S+",
                lambda m: f"CREATE {m.group(1) or ''}INDEX ON {stage}",
                indexdef,
            )
            self.conn.execute(definition)

    def commit_day(
        self, results: dict[str, DatasetResult], run_id: str, started_at: datetime
    ) -> None:
        """Swap the whole day in, in one transaction."""
        day = self.day
        qstage = warehouse.qualified(_quarantine_stage(day))
        with self.conn.transaction():
            self.conn.execute("SET LOCAL lock_timeout = '120s'")
            for ds in contract.DATASETS:
                stage = _stage_name(ds, day)
                if ds.is_event:
                    warehouse.swap_day_partition(self.conn, ds.raw_table, stage, day)
                    self._replace_day_keys(ds)
                else:
                    self._replace_dimension_day(ds, stage)
            self.conn.execute("DELETE FROM quarantine.rejected_rows WHERE dt = %s", (day,))
            self.conn.execute(
                sql.SQL("INSERT INTO quarantine.rejected_rows SELECT * FROM {}").format(qstage)
            )
            self.conn.execute("DELETE FROM raw.ingest_log WHERE dt = %s", (day,))
            with self.conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO raw.ingest_log (dt, dataset, source_file, file_format, file_bytes,"
                    " file_sha256, rows_read, rows_accepted, rows_quarantined, contract_version)"
                    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                    [
                        (
                            day,
                            f.dataset,
                            f.source_file,
                            f.file_format,
                            f.file_bytes,
                            f.file_sha256,
                            f.rows_read,
                            f.rows_accepted,
                            f.rows_quarantined,
                            contract.CONTRACT_VERSION,
                        )
                        for res in results.values()
                        for f in res.files
                    ],
                )
            self.conn.execute(
                "INSERT INTO raw.ingest_runs (run_id, dt, started_at, finished_at, files,"
                " rows_read, rows_accepted, rows_quarantined)"
                " VALUES (%s, %s, %s, now(), %s, %s, %s, %s)"
                " ON CONFLICT (run_id, dt) DO UPDATE SET finished_at = now(),"
                " files = EXCLUDED.files,"
                " rows_read = EXCLUDED.rows_read, rows_accepted = EXCLUDED.rows_accepted,"
                " rows_quarantined = EXCLUDED.rows_quarantined",
                (
                    run_id,
                    day,
                    started_at,
                    sum(len(r.files) for r in results.values()),
                    sum(r.rows_read for r in results.values()),
                    sum(r.rows_accepted for r in results.values()),
                    sum(r.rows_quarantined for r in results.values()),
                ),
            )

    def _replace_day_keys(self, ds: Dataset) -> None:
        """Replace the day's key run with the distinct keys of its partition, just swapped
        in (same transaction, so the runs always match the partitions). One row, by primary
        key: nothing here reads or rewrites the other days' keys."""
        runs = warehouse.qualified(ds.key_runs_table)
        self.conn.execute(sql.SQL("DELETE FROM {} WHERE dt = %s").format(runs), (self.day,))
        keys = self.key_runs.get(ds.name)
        if keys is not None and len(keys):
            self.conn.execute(
                sql.SQL("INSERT INTO {} (dt, event_keys, key_count) VALUES (%s, %b, %s)").format(
                    runs
                ),
                (self.day, keys.astype(">i8").tobytes(), len(keys)),
            )

    def _replace_dimension_day(self, ds: Dataset, stage: str) -> None:
        versions = warehouse.qualified(ds.raw_table)
        current = warehouse.qualified(ds.current_table)
        key = sql.Identifier(ds.key)
        cols = sql.SQL(", ").join(map(sql.Identifier, ds.column_names))
        vcols = sql.SQL(", ").join(
            sql.SQL("v.{}").format(sql.Identifier(c)) for c in ds.column_names
        )
        self.conn.execute(
            sql.SQL(
                "CREATE TEMP TABLE _affected ON COMMIT DROP AS"
                " SELECT {key} FROM {versions} WHERE dt = %s UNION SELECT {key} FROM {stage}"
            ).format(key=key, versions=versions, stage=warehouse.qualified(stage)),
            (self.day,),
        )
        self.conn.execute("ANALYZE pg_temp._affected")
        self.conn.execute(sql.SQL("DELETE FROM {} WHERE dt = %s").format(versions), (self.day,))
        self.conn.execute(
            sql.SQL("INSERT INTO {versions} SELECT * FROM {stage}").format(
                versions=versions, stage=warehouse.qualified(stage)
            )
        )
        self.conn.execute(
            sql.SQL("DELETE FROM {current} c USING _affected a WHERE c.{key} = a.{key}").format(
                current=current, key=key
            )
        )
        self.conn.execute(
            sql.SQL(
                """
                INSERT INTO {current} ({cols}, first_delivered, last_delivered)
                SELECT DISTINCT ON (v.{key}) {vcols},
                       min(v.dt) OVER (
                           PARTITION BY v.{key} ORDER BY v.dt DESC
                           ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING),
                       v.dt
                FROM {versions} v JOIN _affected a ON a.{key} = v.{key}
                ORDER BY v.{key}, v.dt DESC
                """
            ).format(current=current, cols=cols, key=key, vcols=vcols, versions=versions)
        )
        self.conn.execute("DROP TABLE _affected")


def ingest_day(
    day: date,
    *,
    run_id: str | None = None,
    dsn: str | None = None,
    landing_root: Path | None = None,
    chunk_rows: int | None = None,
    now: datetime | None = None,
) -> IngestResult:
    """Ingest landing day ``day`` atomically and idempotently; see the module docstring.

    ``now`` is the clock the "not in the future" rule compares with (default: the time of
    the call).
    """
    settings = get_settings()
    # Batch-sized buffers, allocated and freed all day: no huge-page faults for them.
    allocation.without_huge_pages()
    root = Path(landing_root or settings.landing_root)
    chunk_rows = chunk_rows or settings.ingest_chunk_rows
    run_id = run_id or f"cli-{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"
    started = time.perf_counter()
    started_at = datetime.now(UTC)

    missing = missing_markers(day, root)
    if missing:
        raise LandingIncomplete(day, missing)
    files = {ds.name: landing_files(day_folder(root, ds.name, day)) for ds in contract.DATASETS}

    target = warehouse.ensure_migrated(dsn)
    with (
        # The files' SHA-256 on a thread of their own (hashlib releases the GIL): ready by
        # the time each file is read, instead of a pass over it first.
        ThreadPoolExecutor(1, thread_name_prefix="encore-sha256") as hasher,
        warehouse.connect(target, autocommit=True) as conn,
        warehouse.session_lock(conn, f"encore.ingest.{day.isoformat()}"),
    ):
        digests = {p: hasher.submit(_sha256, p) for paths in files.values() for p in paths}
        # Hash aggregates and index builds over a whole day stay in memory.
        conn.execute("SET work_mem = '256MB'")
        conn.execute("SET maintenance_work_mem = '512MB'")
        loader = _DayLoader(conn, day, root, chunk_rows, now or datetime.now(UTC), digests)
        loader.create_stages()
        try:
            results: dict[str, DatasetResult] = {}
            for ds in contract.DATASETS:
                res = DatasetResult(ds.name, loader.load_files(ds, files[ds.name]))
                if ds.is_event:
                    loader.index_event_stage(ds)
                    # Statistics first: the duplicate checks then probe the event_key index
                    # (and the day carries fresh statistics once swapped in). COPY FREEZE
                    # already set the visibility map, so the VACUUM part skips every page;
                    # it stays as the guarantee that readers of the day never set hint bits
                    # and index-only scans never fetch heap rows (5 s of a 2.5M-row day
                    # without the map, against 0.3 s).
                    conn.execute(
                        sql.SQL("VACUUM (ANALYZE) {}").format(
                            warehouse.qualified(_stage_name(ds, day))
                        )
                    )
                    removed = loader.settle_event_duplicates(ds)
                else:
                    removed = loader.settle_key_duplicates(ds)
                quarantined = loader.quarantined_by_file(ds)
                for stats in res.files:
                    # accepted = what the server reported COPYed, less duplicates removed
                    stats.rows_accepted = loader.copied.get(stats.source_file, 0) - removed.get(
                        stats.source_file, 0
                    )
                    stats.rows_quarantined = quarantined.get(stats.source_file, 0)
                    if stats.rows_read != stats.rows_accepted + stats.rows_quarantined:
                        raise IngestError(
                            f"{stats.source_file}: read {stats.rows_read} rows but accounted for "
                            f"{stats.rows_accepted} accepted + {stats.rows_quarantined} quarantined"
                        )
                results[ds.name] = res
                log.info(
                    "%s %s: %d read, %d accepted, %d quarantined",
                    day,
                    ds.name,
                    res.rows_read,
                    res.rows_accepted,
                    res.rows_quarantined,
                )
            loader.commit_day(results, run_id, started_at)
        finally:
            loader.drop_stages()
    result = IngestResult(day, run_id, results, time.perf_counter() - started)
    log.info(
        "ingested %s in %.1fs: %d rows read, %d accepted, %d quarantined",
        day,
        result.seconds,
        result.rows_read,
        result.rows_accepted,
        result.rows_quarantined,
    )
    return result
