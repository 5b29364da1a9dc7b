"""Broken landing data on purpose: a registry of the ways a landing day breaks the contract.

Each :class:`BadInput` names one kind of corruption. Its ``write`` function gets a landing
root that already holds a clean day (:func:`write_clean_day`) and breaks it: it rewrites
files, adds rows, removes markers. It returns the rows it broke (:class:`Broken`), each with
the reasons ingestion must give. The expected outcome of the kind is one of

- ``quarantine``: the day loads; exactly the broken rows are in ``quarantine.rejected_rows``
  (for audio kinds: ``quarantine.audio_rejects``) with those reasons and their payload as
  delivered, every other row is in ``raw``, and rows read = accepted + quarantined per file;
- ``refuse``: ingestion raises with a message matching ``error`` (naming the file and the
  problem) and the warehouse is exactly as before, a good earlier version of the day intact;
- ``accept``: odd but lawful input; every row lands in ``raw`` and nothing is quarantined.

``tests/reliability/test_bad_input.py`` runs every kind through ``ml_tasks.ingest`` (and
``ml_tasks.audio`` for clips), the same code the ``encore ingest`` CLI and the DAGs call.
"""

from __future__ import annotations

import csv
import io
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from landing import good_play, good_sub, good_track, good_user, write_csv, write_parquet
from ml_tasks import contract

Outcome = Literal["quarantine", "refuse", "accept"]

#: The file every clean dataset-day holds.
PART = "part-000"


@dataclass(frozen=True)
class Broken:
    """One row a corruption broke, and what ingestion must record about it.

    ``file`` is the file name inside the dataset-day folder (for audio: the preview path),
    ``row`` the data row number (1 = first). ``payload`` holds values the quarantined
    payload must show as delivered (CSV values as text). ``reasons`` are the exact reasons
    (for audio: the reject reason); empty means the kind's own reasons.
    """

    dataset: str
    file: str
    row: int
    payload: dict[str, object] = field(default_factory=dict)
    reasons: tuple[str, ...] = ()


Writer = Callable[[Path, date], list[Broken]]


@dataclass(frozen=True)
class BadInput:
    """One kind of broken landing data and what ingesting it must do."""

    name: str
    description: str
    dataset: str
    write: Writer
    outcome: Outcome
    #: quarantine: the reasons every broken row gets (unless its Broken says otherwise)
    reasons: tuple[str, ...] = ()
    #: refuse: a regex the error message must match (it must name the file)
    error: str | None = None
    #: the broken thing is a preview clip: run audio extraction after ingesting
    audio: bool = False
    #: ingest with this batch size (None: the settings' default)
    chunk_rows: int | None = None
    #: ingest with the clock at this time of the day (None: the real clock)
    clock: time | None = None
    #: a neighbouring day (offset from the day) the writer fills and that is ingested first
    prior_day: int | None = None
    #: accept: a regex a warning of ``ml_tasks.ingest`` must match
    warning: str | None = None
    #: more checks on the loaded day: ``verify(connection, day)`` raises AssertionError
    verify: Callable[[Any, date], None] | None = None

    def now(self, day: date) -> datetime | None:
        return datetime.combine(day, self.clock, UTC) if self.clock else None


KINDS: list[BadInput] = []


def kind(
    name: str, dataset: str, outcome: Outcome, description: str, **options
) -> Callable[[Writer], Writer]:
    """Register the decorated writer as a kind of bad input."""

    def register(write: Writer) -> Writer:
        options["reasons"] = tuple(options.get("reasons", ()))
        KINDS.append(BadInput(name, description, dataset, write, outcome, **options))
        return write

    return register


# --------------------------------------------------------------------------- reasons


def reason(dataset: str, column: str, code: str) -> str:
    """The contract's quarantine reason for rule ``code`` of a column."""
    return contract.rule_messages(contract.dataset(dataset).column(column))[code]


def cross(dataset: str, code: str) -> str:
    """The contract's quarantine reason of a cross-column rule."""
    return next(r.message for r in contract.dataset(dataset).cross_rules if r.code == code)


LE, SE, US, TR = "listening_events", "subscription_events", "users", "tracks"


# --------------------------------------------------------------------------- clean days


def folder(root: Path, dataset: str, day: date) -> Path:
    return root / dataset / f"dt={day.isoformat()}"


def clean_rows(dataset: str, day: date, tag: str = "") -> list[dict]:
    """The rows of a clean day; ids carry the day (and ``tag``), unique across days."""
    stamp = f"{tag}{day:%Y%m%d}"
    if dataset == US:
        return [good_user(i, day) for i in (1, 2, 3)]
    if dataset == TR:  # no preview clips: audio kinds add their own
        return [dict(good_track(t, day), preview_path=None) for t in ("t1", "t2")]
    if dataset == LE:
        return [
            good_play(f"e{stamp}-{i}", 1 + i % 3, "t1" if i % 2 else "t2", day, i % 20)
            for i in range(20)
        ]
    return [good_sub(f"s{stamp}-{i}", 1 + i, day) for i in range(3)]


def write_clean_day(root: Path, day: date, tag: str = "") -> None:
    """A clean CSV landing day (replacing whatever the day's folders held)."""
    for ds in contract.DATASETS:
        target = folder(root, ds.name, day)
        shutil.rmtree(target, ignore_errors=True)
        write_csv(target / f"{PART}.csv", ds.name, clean_rows(ds.name, day, tag))
        (target / contract.SUCCESS_MARKER).touch()


def put(
    root: Path,
    day: date,
    dataset: str,
    rows: list[dict],
    fmt: str = "csv",
    name: str = PART,
    columns: list[str] | None = None,
) -> Path:
    """Replace file ``name`` of a dataset-day (either format) by ``rows``."""
    target = folder(root, dataset, day)
    for old in target.glob(f"{name}.*"):
        old.unlink()
    path = target / f"{name}.{fmt}"
    if fmt == "csv":
        return write_csv(path, dataset, rows, columns=columns)
    return write_parquet(path, dataset, rows)


def csv_bytes(
    dataset: str, rows: list[dict], columns: list[str] | None = None, newline: str = "\n"
) -> str:
    """CSV text of rows (values rendered as :func:`landing.write_csv` does)."""
    columns = columns or list(contract.dataset(dataset).column_names)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator=newline)
    writer.writerow(columns)
    for row in rows:
        writer.writerow(["" if row.get(c) is None else _text(row.get(c)) for c in columns])
    return out.getvalue()


def _text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def set_parquet_column(path: Path, name: str, values: pa.Array) -> None:
    """Replace one column of a Parquet file (any type: that is the point)."""
    table = pq.read_table(path)
    table = table.set_column(table.schema.get_field_index(name), name, values)
    pq.write_table(table, path)


def breaking(
    dataset: str, day: date, changes: list[dict], fmt: str = "csv", root: Path | None = None
) -> tuple[list[dict], list[Broken]]:
    """Clean rows plus one row per ``changes`` entry (a clean row with those values).

    The broken rows follow the clean ones; returns all rows and the broken rows' records
    (payload: the changed values as the file holds them).
    """
    clean = clean_rows(dataset, day)
    rows = list(clean)
    broken: list[Broken] = []
    key = contract.dataset(dataset).key
    for i, change in enumerate(changes):
        row = dict(clean[i % len(clean)])
        if key not in change:  # a fresh key, so only the change is wrong
            row[key] = 9000 + i if dataset == US else f"bad-{day:%Y%m%d}-{i}"
        row.update(change)
        rows.append(row)
        payload = {
            c: (None if v is None else _text(v)) if fmt == "csv" else v for c, v in change.items()
        }
        broken.append(Broken(dataset, f"{PART}.{fmt}", len(rows), payload))
    if root is not None:
        put(root, day, dataset, rows, fmt)
    return rows, broken


def with_reasons(broken: list[Broken], reasons: list[tuple[str, ...]]) -> list[Broken]:
    """Give each broken row its own reasons."""
    return [
        Broken(b.dataset, b.file, b.row, b.payload, r) for b, r in zip(broken, reasons, strict=True)
    ]


def ts(day: date, hour: int, minute: int = 0, second: int = 0, suffix: str = "Z") -> str:
    return f"{day.isoformat()}T{hour:02d}:{minute:02d}:{second:02d}{suffix}"


# =========================================================================== the day refused


@kind(
    "parquet_truncated",
    LE,
    "refuse",
    "A Parquet file cut in half (an interrupted upload): its footer is gone.",
    error=r"listening_events/dt=\S+/part-000\.parquet: not a readable Parquet file",
)
def _parquet_truncated(root: Path, day: date) -> list[Broken]:
    path = put(root, day, LE, clean_rows(LE, day), "parquet")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return []


@kind(
    "parquet_not_parquet",
    LE,
    "refuse",
    "CSV text in a file named .parquet.",
    error=r"part-000\.parquet: not a readable Parquet file",
)
def _parquet_not_parquet(root: Path, day: date) -> list[Broken]:
    target = folder(root, LE, day)
    (target / f"{PART}.csv").rename(target / f"{PART}.parquet")
    return []


@kind(
    "parquet_zero_bytes",
    US,
    "refuse",
    "An empty (0-byte) .parquet file.",
    error=r"users/dt=\S+/part-000\.parquet: .*0 bytes",
)
def _parquet_zero_bytes(root: Path, day: date) -> list[Broken]:
    put(root, day, US, [], "parquet").write_bytes(b"")
    return []


@kind(
    "csv_zero_bytes",
    TR,
    "refuse",
    "An empty (0-byte) .csv file: not even a header.",
    error=r"tracks/dt=\S+/part-000\.csv: empty file: no header row",
)
def _csv_zero_bytes(root: Path, day: date) -> list[Broken]:
    (folder(root, TR, day) / f"{PART}.csv").write_bytes(b"")
    return []


@kind(
    "csv_latin1",
    US,
    "refuse",
    "A CSV file encoded in Latin-1 instead of UTF-8.",
    error=r"users/dt=\S+/part-000\.csv: not valid UTF-8",
)
def _csv_latin1(root: Path, day: date) -> list[Broken]:
    rows = clean_rows(US, day)
    rows[1]["gender"] = "kvinna, född i Malmö"
    (folder(root, US, day) / f"{PART}.csv").write_bytes(csv_bytes(US, rows).encode("latin-1"))
    return []


@kind(
    "csv_utf16_bom",
    LE,
    "refuse",
    "A CSV file saved as UTF-16 with a byte-order mark (a spreadsheet export).",
    error=r"listening_events/dt=\S+/part-000\.csv: not valid UTF-8",
)
def _csv_utf16(root: Path, day: date) -> list[Broken]:
    path = folder(root, LE, day) / f"{PART}.csv"
    path.write_bytes(path.read_text(encoding="utf-8").encode("utf-16"))
    return []


@kind(
    "csv_invalid_utf8_deep",
    LE,
    "refuse",
    "A CSV file valid UTF-8 for its first 30 kB, then one stray byte (0xFF).",
    error=r"listening_events/dt=\S+/part-000\.csv: not valid UTF-8",
)
def _csv_invalid_utf8_deep(root: Path, day: date) -> list[Broken]:
    rows = [good_play(f"deep{day:%Y%m%d}-{i}", 1 + i % 3, "t1", day, i % 20) for i in range(400)]
    text = csv_bytes(LE, rows).encode()
    stray = good_play(f"deep{day:%Y%m%d}-x", 1, "t1", day, 3)
    stray["track_id"] = "t\udcff"  # becomes the lone byte 0xFF
    tail = csv_bytes(LE, [stray]).split("\n", 1)[1].encode("utf-8", "surrogateescape")
    (folder(root, LE, day) / f"{PART}.csv").write_bytes(text + tail)
    return []


@kind(
    "csv_missing_column",
    LE,
    "refuse",
    "A CSV file without the required column liked.",
    error=r"listening_events/dt=\S+/part-000\.csv: missing required column\(s\) liked",
)
def _csv_missing_column(root: Path, day: date) -> list[Broken]:
    cols = [c for c in contract.LISTENING_EVENTS.column_names if c != "liked"]
    put(root, day, LE, clean_rows(LE, day), columns=cols)
    return []


@kind(
    "parquet_missing_column",
    SE,
    "refuse",
    "A Parquet file without the required column currency.",
    error=r"subscription_events/dt=\S+/part-000\.parquet: missing required column\(s\) currency",
)
def _parquet_missing_column(root: Path, day: date) -> list[Broken]:
    path = put(root, day, SE, clean_rows(SE, day), "parquet")
    pq.write_table(pq.read_table(path).drop_columns(["currency"]), path)
    return []


@kind(
    "csv_header_whitespace",
    SE,
    "refuse",
    "Header names padded with spaces (' event_id'): the required columns are not there.",
    error=r"subscription_events/dt=\S+/part-000\.csv: missing required column\(s\) event_id",
)
def _csv_header_whitespace(root: Path, day: date) -> list[Broken]:
    path = folder(root, SE, day) / f"{PART}.csv"
    path.write_text(path.read_text().replace("event_id,", " event_id ,", 1))
    return []


@kind(
    "csv_duplicate_header",
    US,
    "refuse",
    "A CSV header naming country twice.",
    error=r"users/dt=\S+/part-000\.csv: duplicate column names",
)
def _csv_duplicate_header(root: Path, day: date) -> list[Broken]:
    cols = [*contract.USERS.column_names, "country"]
    put(root, day, US, clean_rows(US, day), columns=cols)
    return []


@kind(
    "parquet_duplicate_column",
    TR,
    "refuse",
    "A Parquet schema with two columns named title.",
    error=r"tracks/dt=\S+/part-000\.parquet: duplicate column names",
)
def _parquet_duplicate_column(root: Path, day: date) -> list[Broken]:
    path = put(root, day, TR, clean_rows(TR, day), "parquet")
    table = pq.read_table(path)
    pq.write_table(table.append_column("title", table.column("title")), path)
    return []


@kind(
    "csv_ragged_row",
    LE,
    "refuse",
    "A CSV row with one field too many (an unquoted comma).",
    error=r"listening_events/dt=\S+/part-000\.csv: CSV parse error: Expected 11 columns, got 12",
)
def _csv_ragged_row(root: Path, day: date) -> list[Broken]:
    path = folder(root, LE, day) / f"{PART}.csv"
    extra = good_play(f"ragged{day:%Y%m%d}", 1, "t1", day, 4)
    extra["track_id"] = "t1,remix"
    line = ",".join(_text(extra[c]) for c in contract.LISTENING_EVENTS.column_names)
    path.write_text(path.read_text() + line + "\n")
    return []


@kind(
    "csv_truncated_mid_row",
    SE,
    "refuse",
    "A CSV file cut off in the middle of its last row.",
    error=r"subscription_events/dt=\S+/part-000\.csv: CSV parse error: Expected 8 columns",
)
def _csv_truncated(root: Path, day: date) -> list[Broken]:
    path = folder(root, SE, day) / f"{PART}.csv"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 25])
    return []


@kind(
    "second_file_truncated",
    LE,
    "refuse",
    "A good CSV file and, beside it, a truncated Parquet file: nothing of the day loads.",
    error=r"listening_events/dt=\S+/part-001\.parquet: not a readable Parquet file",
)
def _second_file_truncated(root: Path, day: date) -> list[Broken]:
    more = [good_play(f"p1{day:%Y%m%d}-{i}", 2, "t2", day, 5) for i in range(30)]
    path = put(root, day, LE, more, "parquet", name="part-001")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 40])
    return []


@kind(
    "unexpected_file_type",
    TR,
    "refuse",
    "A JSON file among the day's data files.",
    error=r"tracks/dt=\S+/extra\.json: not a \.parquet or \.csv file",
)
def _unexpected_file_type(root: Path, day: date) -> list[Broken]:
    (folder(root, TR, day) / "extra.json").write_text('{"track_id": "t9"}')
    return []


@kind(
    "missing_success_marker",
    SE,
    "refuse",
    "A dataset folder of the day without its _SUCCESS marker (delivery not finished).",
    error=r"landing day \S+ is not complete: no _SUCCESS in \S*subscription_events/dt=",
)
def _missing_success(root: Path, day: date) -> list[Broken]:
    (folder(root, SE, day) / contract.SUCCESS_MARKER).unlink()
    return []


@kind(
    "parquet_nested_column",
    LE,
    "refuse",
    "A Parquet file whose user_id column holds lists of integers.",
    error=r"listening_events/dt=\S+/part-000\.parquet: column user_id: list<",
)
def _parquet_nested(root: Path, day: date) -> list[Broken]:
    path = put(root, day, LE, clean_rows(LE, day), "parquet")
    set_parquet_column(path, "user_id", pa.array([[1, 2]] * 20, pa.list_(pa.int64())))
    return []


@kind(
    "parquet_binary_not_utf8",
    TR,
    "refuse",
    "A Parquet binary column for title holding bytes that are not UTF-8.",
    error=r"tracks/dt=\S+/part-000\.parquet: column title: .*not valid UTF-8",
)
def _parquet_binary(root: Path, day: date) -> list[Broken]:
    path = put(root, day, TR, clean_rows(TR, day), "parquet")
    set_parquet_column(path, "title", pa.array([b"Song", b"Caf\xe9 \xff"], pa.binary()))
    return []


@kind(
    "csv_row_longer_than_read_block",
    TR,
    "refuse",
    "A 3 MB title read with the smallest batch size (a 1 MB CSV read block).",
    error=r"tracks/dt=\S+/part-000\.csv: a row is longer than the CSV read block",
    chunk_rows=1000,
)
def _csv_row_too_long(root: Path, day: date) -> list[Broken]:
    rows = clean_rows(TR, day)
    rows[0]["title"] = "la" * 1_500_000
    put(root, day, TR, rows)
    return []


# =========================================================================== lawful but odd


def _one(conn, query: str, *params) -> Any:
    return conn.execute(query, params).fetchone()[0]


def _file(dataset: str, day: date, name: str = f"{PART}.csv") -> str:
    return f"{dataset}/dt={day.isoformat()}/{name}"


def _verify_huge(conn, day: date) -> None:
    title = "SELECT length(title) FROM raw.track_versions WHERE dt = %s AND track_id = 't1'"
    gender = "SELECT length(gender) FROM raw.user_versions WHERE dt = %s AND user_id = 3"
    assert _one(conn, title, day) == 1_000_000
    assert _one(conn, gender, day) == 200_000


def _verify_quoting(conn, day: date) -> None:
    ids = {
        r[0]
        for r in conn.execute(
            "SELECT event_id FROM raw.listening_events WHERE source_file = %s", (_file(LE, day),)
        )
    }
    assert {f'say "hi", {day}', f"two\nlines {day}", f"carriage\r\nreturn {day}"} <= ids, ids


def _verify_unicode(conn, day: date) -> None:
    query = "SELECT title, artist_id, genre FROM raw.track_versions WHERE dt = %s ORDER BY 1"
    rows = conn.execute(query, (day,)).fetchall()
    assert ("Ἀχιλλεύς 🎸 مرحبا e\u0301\u200d", "a1", "rock") in rows, rows
    assert ("Song t2", "艺术家\u202e", "ロック") in rows, rows


def _verify_flags(conn, day: date) -> None:
    query = (
        "SELECT source_row, unknown_user, unknown_track FROM raw.listening_events"
        " WHERE source_file = %s AND (unknown_user OR unknown_track) ORDER BY 1"
    )
    flagged = conn.execute(query, (_file(LE, day),)).fetchall()
    assert flagged == [(1, True, False), (2, False, True)], flagged


def _verify_lenient(conn, day: date) -> None:
    query = (
        "SELECT min(played_at), max(played_at), count(*) FILTER (WHERE liked),"
        " count(DISTINCT user_id) FROM raw.listening_events WHERE source_file = %s"
    )
    low = datetime.combine(day, time(0), UTC)
    got = conn.execute(query, (_file(LE, day, f"{PART}.parquet"),)).fetchone()
    assert got == (low, low + timedelta(hours=19), 10, 3), got


def _verify_huge_ids(conn, day: date) -> None:
    query = (
        "SELECT count(*) FROM raw.listening_events"
        " WHERE source_file = %s AND length(event_id) > 10000"
    )
    assert _one(conn, query, _file(LE, day)) == 2


@kind(
    "csv_utf8_bom",
    LE,
    "accept",
    "A CSV file starting with a UTF-8 byte-order mark.",
)
def _csv_bom(root: Path, day: date) -> list[Broken]:
    path = folder(root, LE, day) / f"{PART}.csv"
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    return []


@kind(
    "csv_extra_columns",
    LE,
    "accept",
    "Unknown extra CSV columns (mood, debug): ignored with a warning.",
    warning=r"ignoring unknown column\(s\) mood, debug",
)
def _csv_extra(root: Path, day: date) -> list[Broken]:
    rows = [dict(r, mood="happy", debug="x,y") for r in clean_rows(LE, day)]
    put(root, day, LE, rows, columns=[*contract.LISTENING_EVENTS.column_names, "mood", "debug"])
    return []


@kind(
    "parquet_extra_columns",
    US,
    "accept",
    "An unknown extra Parquet column (a nested one): ignored with a warning.",
    warning=r"ignoring unknown column\(s\) tags",
)
def _parquet_extra(root: Path, day: date) -> list[Broken]:
    path = put(root, day, US, clean_rows(US, day), "parquet")
    table = pq.read_table(path)
    pq.write_table(
        table.append_column("tags", pa.array([["a"], [], None], pa.list_(pa.string()))), path
    )
    return []


@kind(
    "csv_header_only",
    LE,
    "accept",
    "A CSV file with a header and no rows: zero rows read, none lost.",
)
def _csv_header_only(root: Path, day: date) -> list[Broken]:
    put(root, day, LE, [])
    return []


@kind(
    "parquet_no_rows",
    SE,
    "accept",
    "A Parquet file with the schema and no rows.",
)
def _parquet_no_rows(root: Path, day: date) -> list[Broken]:
    put(root, day, SE, [], "parquet")
    return []


@kind(
    "huge_fields",
    TR,
    "accept",
    "A 2 MB track title and a 200 kB gender: kept whole.",
    verify=_verify_huge,
)
def _huge_fields(root: Path, day: date) -> list[Broken]:
    tracks = clean_rows(TR, day)
    tracks[0]["title"] = "ä" * 1_000_000
    put(root, day, TR, tracks)
    users = clean_rows(US, day)
    users[2]["gender"] = "x" * 200_000
    put(root, day, US, users, "parquet")
    return []


@kind(
    "csv_quoting_and_newlines",
    LE,
    "accept",
    "Ids with quotes, commas, CR/LF line breaks inside quoted fields, and CRLF line ends.",
    verify=_verify_quoting,
)
def _csv_quoting(root: Path, day: date) -> list[Broken]:
    rows = clean_rows(LE, day)
    rows[0]["event_id"] = f'say "hi", {day}'
    rows[1]["event_id"] = f"two\nlines {day}"
    rows[2]["event_id"] = f"carriage\r\nreturn {day}"
    text = csv_bytes(LE, rows, newline="\r\n")
    (folder(root, LE, day) / f"{PART}.csv").write_bytes(text.encode())
    return []


@kind(
    "unicode_text",
    TR,
    "accept",
    "Titles and ids in many scripts: emoji, right-to-left, combining marks, zero-width.",
    verify=_verify_unicode,
)
def _unicode_text(root: Path, day: date) -> list[Broken]:
    rows = clean_rows(TR, day)
    rows[0]["title"] = "Ἀχιλλεύς 🎸 مرحبا e\u0301\u200d"
    rows[1]["artist_id"] = "艺术家\u202e"
    rows[1]["genre"] = "ロック"
    put(root, day, TR, rows, "parquet")
    return []


@kind(
    "unknown_references",
    LE,
    "accept",
    "Plays of users and tracks nobody delivered: kept, flagged unknown_user/unknown_track.",
    verify=_verify_flags,
)
def _unknown_references(root: Path, day: date) -> list[Broken]:
    rows = clean_rows(LE, day)
    rows[0]["user_id"] = 404
    rows[1]["track_id"] = "no-such-track"
    put(root, day, LE, rows)
    return []


@kind(
    "parquet_lenient_types",
    LE,
    "accept",
    "Parquet types other than the contract's that hold lawful values: int8 booleans (0/1),"
    " float user ids (1.0), string timestamps, dictionary-encoded enums, a non-UTC zone.",
    verify=_verify_lenient,
)
def _parquet_lenient(root: Path, day: date) -> list[Broken]:
    path = put(root, day, LE, clean_rows(LE, day), "parquet")
    table = pq.read_table(path)
    set_parquet_column(path, "liked", pa.array([i % 2 for i in range(20)], pa.int8()))
    set_parquet_column(path, "user_id", pa.array([float(1 + i % 3) for i in range(20)]))
    set_parquet_column(
        path, "context_type", table.column("context_type").combine_chunks().dictionary_encode()
    )
    stamps = table.column("played_at").cast(pa.timestamp("ms", tz="Asia/Kolkata"))
    set_parquet_column(path, "played_at", stamps.combine_chunks())
    subs = put(root, day, SE, clean_rows(SE, day), "parquet")
    set_parquet_column(
        subs, "event_at", pa.array([ts(day, 9, 30, i, "+00:00") for i in range(3)], pa.string())
    )
    return []


# =========================================================================== rows quarantined


def _per_column_kinds(
    dataset: str, what: str, make: Callable[[contract.Column], object | None], codes: CodesOf
) -> None:
    """One row per column of ``dataset`` that ``make`` breaks (None: not this column);
    ``codes(column)`` are the rules the value breaks."""
    ds = contract.dataset(dataset)
    targets = [(c, v) for c in ds.columns if (v := make(c)) is not None]
    expected = [tuple(reason(dataset, c.name, code) for code in codes(c)) for c, _ in targets]

    def write(root: Path, day: date) -> list[Broken]:
        changes = [{c.name: (None if v is _NULL else v)} for c, v in targets]
        _, broken = breaking(dataset, day, changes, root=root)
        return with_reasons(broken, expected)

    reasons = tuple(dict.fromkeys(r for rs in expected for r in rs))
    KINDS.append(
        BadInput(
            f"{what}_{dataset}",
            f"{dataset}: a row per column with {what.replace('_', ' ')} "
            f"({', '.join(c.name for c, _ in targets)}).",
            dataset,
            write,
            "quarantine",
            reasons,
        )
    )


_NULL = object()
CodesOf = Callable[[contract.Column], tuple[str, ...]]


def _nul_codes(col: contract.Column) -> tuple[str, ...]:
    """A NUL inside a value also breaks the column's enum, pattern or path rule."""
    extra = {"allowed": col.allowed, "pattern": col.pattern, "path": col.relative_path}
    return ("nul", *(code for code, rule in extra.items() if rule))


_GARBAGE = {
    contract.Kind.INT16: "12.5",
    contract.Kind.INT32: "1,000",
    contract.Kind.INT64: "abc",
    contract.Kind.BOOL: "maybe",
    contract.Kind.TIMESTAMP: "yesterday",
    contract.Kind.DATE: "2026-02-30",
    contract.Kind.DECIMAL: "ten",
}

for _ds in contract.DATASETS:
    _key = _ds.key
    _per_column_kinds(
        _ds.name,
        "missing_values",
        lambda c, key=_key: _NULL if not c.nullable and c.name != key else None,
        lambda c: ("missing",),
    )
    _per_column_kinds(
        _ds.name,
        "wrong_types",
        lambda c, key=_key: _GARBAGE.get(c.kind) if c.name != key else None,
        lambda c: ("type",),
    )
    _per_column_kinds(
        _ds.name,
        "nul_characters",
        lambda c, key=_key: "a\x00b" if c.kind is contract.Kind.STRING and c.name != key else None,
        _nul_codes,
    )


@kind(
    "missing_keys",
    LE,
    "quarantine",
    "Rows without their key: event_id, a subscription event_id, user_id, track_id.",
)
def _missing_keys(root: Path, day: date) -> list[Broken]:
    out: list[Broken] = []
    for ds in contract.DATASETS:
        _, broken = breaking(ds.name, day, [{ds.key: None}], root=root)
        out += with_reasons(broken, [(reason(ds.name, ds.key, "missing"),)])
    return out


@kind(
    "nul_in_keys",
    LE,
    "quarantine",
    "A NUL character inside keys (event ids, track_id): PostgreSQL text cannot hold it.",
)
def _nul_in_keys(root: Path, day: date) -> list[Broken]:
    _, plays = breaking(LE, day, [{"event_id": f"e\x00{day}"}], root=root)
    _, subs = breaking(SE, day, [{"event_id": f"s\x00{day}"}], root=root)
    _, tracks = breaking(TR, day, [{"track_id": "t\x001"}], "parquet", root=root)
    return (
        with_reasons(plays, [(reason(LE, "event_id", "nul"),)])
        + with_reasons(subs, [(reason(SE, "event_id", "nul"),)])
        + with_reasons(tracks, [(reason(TR, "track_id", "nul"),)])
    )


@kind(
    "parquet_wrong_types",
    LE,
    "quarantine",
    "Parquet columns of the wrong type: user_id as text, ms_played as float with a fraction.",
)
def _parquet_wrong_types(root: Path, day: date) -> list[Broken]:
    path = put(root, day, LE, clean_rows(LE, day), "parquet")
    set_parquet_column(path, "user_id", pa.array(["1", "abc", *["2"] * 18]))
    set_parquet_column(path, "ms_played", pa.array([1000.0, 1000.0, 1.5, *[1000.0] * 17]))
    file = f"{PART}.parquet"
    return [
        Broken(LE, file, 2, {"user_id": "abc"}, (reason(LE, "user_id", "type"),)),
        Broken(LE, file, 3, {"ms_played": 1.5}, (reason(LE, "ms_played", "type"),)),
    ]


@kind(
    "parquet_bool_out_of_range",
    LE,
    "quarantine",
    "A Parquet integer column for a boolean holding 2 and -1.",
    reasons=[reason(LE, "liked", "type")],
)
def _parquet_bool(root: Path, day: date) -> list[Broken]:
    path = put(root, day, LE, clean_rows(LE, day), "parquet")
    set_parquet_column(path, "liked", pa.array([1, 2, 0, -1, *[1] * 16], pa.int8()))
    file = f"{PART}.parquet"
    return [Broken(LE, file, 2, {"liked": 2}), Broken(LE, file, 4, {"liked": -1})]


@kind(
    "integer_overflow",
    LE,
    "quarantine",
    "Integers beyond their type: ms_played above int32, user ids above int64.",
)
def _integer_overflow(root: Path, day: date) -> list[Broken]:
    _, broken = breaking(
        LE, day, [{"ms_played": "3000000000"}, {"user_id": "99999999999999999999"}], root=root
    )
    _, users = breaking(US, day, [{"user_id": "9223372036854775808"}], root=root)
    return with_reasons(
        broken, [(reason(LE, "ms_played", "type"),), (reason(LE, "user_id", "type"),)]
    ) + with_reasons(users, [(reason(US, "user_id", "type"),)])


@kind(
    "timestamps_outside_the_day",
    LE,
    "quarantine",
    "played_at a second before the day, at the next midnight, 23:30-02:00 (next day UTC);"
    " event_at two days later.",
    reasons=[reason(LE, "played_at", "in_day")],
)
def _outside_day(root: Path, day: date) -> list[Broken]:
    _, broken = breaking(
        LE,
        day,
        [
            {"played_at": ts(day - timedelta(days=1), 23, 59, 59)},
            {"played_at": ts(day + timedelta(days=1), 0)},
            {"played_at": ts(day, 23, 30, 0, "-02:00")},
        ],
        root=root,
    )
    _, subs = breaking(SE, day, [{"event_at": ts(day + timedelta(days=2), 9)}], root=root)
    return broken + with_reasons(subs, [(reason(SE, "event_at", "in_day"),)])


@kind(
    "timestamps_in_the_future",
    SE,
    "quarantine",
    "event_at and played_at later than the ingest clock (23:00 of the day), inside the day.",
    clock=time(23, 0),
)
def _future(root: Path, day: date) -> list[Broken]:
    _, subs = breaking(SE, day, [{"event_at": ts(day, 23, 30)}], root=root)
    _, plays = breaking(LE, day, [{"played_at": ts(day, 23, 0, 1)}], root=root)
    return with_reasons(subs, [(reason(SE, "event_at", "future"),)]) + with_reasons(
        plays, [(reason(LE, "played_at", "future"),)]
    )


@kind(
    "timestamps_unparseable",
    LE,
    "quarantine",
    "Timestamps that are not ISO 8601 with an offset: no zone, hour 25, words, epoch seconds.",
    reasons=[reason(LE, "played_at", "type")],
)
def _unparseable(root: Path, day: date) -> list[Broken]:
    _, broken = breaking(
        LE,
        day,
        [
            {"played_at": ts(day, 10, suffix="")},
            {"played_at": ts(day, 25)},
            {"played_at": "yesterday"},
            {"played_at": "1793880000"},
        ],
        root=root,
    )
    return broken


@kind(
    "nan_and_infinity_text",
    LE,
    "quarantine",
    "NaN and infinities as CSV text in integer and decimal columns.",
)
def _nan_text(root: Path, day: date) -> list[Broken]:
    _, plays = breaking(LE, day, [{"ms_played": "NaN"}, {"track_duration_ms": "inf"}], root=root)
    _, subs = breaking(SE, day, [{"amount": "-Infinity"}, {"amount": "nan"}], root=root)
    return with_reasons(
        plays, [(reason(LE, "ms_played", "type"),), (reason(LE, "track_duration_ms", "type"),)]
    ) + with_reasons(subs, [(reason(SE, "amount", "type"),)] * 2)


@kind(
    "nan_and_infinity_parquet",
    SE,
    "quarantine",
    "NaN, +inf and -inf in a Parquet float amount; 1.234 (sub-cent) too.",
    reasons=[reason(SE, "amount", "type")],
)
def _nan_parquet(root: Path, day: date) -> list[Broken]:
    _, broken = breaking(
        SE,
        day,
        [{"amount": float("nan")}, {"amount": float("inf")}, {"amount": -float("inf")}],
        "parquet",
        root=root,
    )
    path = folder(root, SE, day) / f"{PART}.parquet"
    set_parquet_column(path, "amount", pa.array([10.99, 1.234, 0.0, np.nan, np.inf, -np.inf]))
    file = f"{PART}.parquet"
    payloads = ["nan", "inf", "-inf"]
    return [Broken(SE, file, 2, {"amount": 1.234})] + [
        Broken(SE, file, b.row, {"amount": p}) for b, p in zip(broken, payloads, strict=True)
    ]


@kind(
    "negative_durations",
    LE,
    "quarantine",
    "Negative ms_played, track_duration_ms and tracks.duration_ms.",
)
def _negative(root: Path, day: date) -> list[Broken]:
    _, plays = breaking(LE, day, [{"ms_played": -1}, {"track_duration_ms": -200000}], root=root)
    _, tracks = breaking(TR, day, [{"duration_ms": -1000}], root=root)
    return with_reasons(
        plays,
        [
            (reason(LE, "ms_played", "min"),),
            # 180000 > 4 x -200000 as well
            (reason(LE, "track_duration_ms", "min"), cross(LE, "ms_played_over_duration")),
        ],
    ) + with_reasons(tracks, [(reason(TR, "duration_ms", "min"),)])


@kind(
    "zero_and_nonpositive_ids",
    US,
    "quarantine",
    "user_id 0 and -5 in users, plays and subscription events; duration 0.",
)
def _nonpositive(root: Path, day: date) -> list[Broken]:
    _, users = breaking(US, day, [{"user_id": 0}, {"user_id": -5}], root=root)
    _, plays = breaking(LE, day, [{"user_id": 0}, {"track_duration_ms": 0}], root=root)
    _, subs = breaking(SE, day, [{"user_id": -5}], root=root)
    return (
        with_reasons(users, [(reason(US, "user_id", "min"),)] * 2)
        + with_reasons(
            plays,
            [
                (reason(LE, "user_id", "min"),),
                (reason(LE, "track_duration_ms", "min"), cross(LE, "ms_played_over_duration")),
            ],
        )
        + with_reasons(subs, [(reason(SE, "user_id", "min"),)])
    )


@kind(
    "ms_played_beyond_four_durations",
    LE,
    "quarantine",
    "A play longer than 4 x the track (the cross-column rule).",
    reasons=[cross(LE, "ms_played_over_duration")],
)
def _over_duration(root: Path, day: date) -> list[Broken]:
    _, broken = breaking(LE, day, [{"ms_played": 800_001}], root=root)
    return broken


@kind(
    "unknown_enum_values",
    LE,
    "quarantine",
    "Values outside every enum: context, device (also a case variant), event type, plan,"
    " acquisition channel.",
)
def _enums(root: Path, day: date) -> list[Broken]:
    _, plays = breaking(
        LE,
        day,
        [{"context_type": "telepathy"}, {"device_type": "Mobile"}, {"context_type": " radio"}],
        root=root,
    )
    _, subs = breaking(SE, day, [{"event_type": "refund"}, {"plan": "platinum"}], root=root)
    _, users = breaking(US, day, [{"acquisition_channel": "tiktok"}], root=root)
    return (
        with_reasons(
            plays,
            [
                (reason(LE, "context_type", "allowed"),),
                (reason(LE, "device_type", "allowed"),),
                (reason(LE, "context_type", "allowed"),),
            ],
        )
        + with_reasons(
            subs, [(reason(SE, "event_type", "allowed"),), (reason(SE, "plan", "allowed"),)]
        )
        + with_reasons(users, [(reason(US, "acquisition_channel", "allowed"),)])
    )


@kind(
    "empty_strings",
    LE,
    "quarantine",
    "Blank required strings: event_id ' ', track_id '\\t', an ideographic space, an empty"
    " artist_id.",
)
def _empty(root: Path, day: date) -> list[Broken]:
    _, plays = breaking(LE, day, [{"event_id": " "}, {"track_id": "\t"}], root=root)
    _, subs = breaking(SE, day, [{"event_id": "\u3000"}], root=root)
    _, tracks = breaking(TR, day, [{"artist_id": ""}, {"track_id": "  "}], "parquet", root=root)
    return (
        with_reasons(
            plays, [(reason(LE, "event_id", "empty"),), (reason(LE, "track_id", "empty"),)]
        )
        + with_reasons(subs, [(reason(SE, "event_id", "empty"),)])
        + with_reasons(
            tracks, [(reason(TR, "artist_id", "empty"),), (reason(TR, "track_id", "empty"),)]
        )
    )


@kind(
    "pattern_violations",
    SE,
    "quarantine",
    "Codes that do not match their pattern: currency 'eur' and 'EURO', country 'SWE' and 'se'.",
)
def _patterns(root: Path, day: date) -> list[Broken]:
    _, subs = breaking(SE, day, [{"currency": "eur"}, {"currency": "EURO"}], root=root)
    _, users = breaking(US, day, [{"country": "SWE"}, {"country": "se"}], root=root)
    return with_reasons(subs, [(reason(SE, "currency", "pattern"),)] * 2) + with_reasons(
        users, [(reason(US, "country", "pattern"),)] * 2
    )


@kind(
    "amount_rules",
    SE,
    "quarantine",
    "Amounts: negative, beyond numeric(10,2), sub-cent text, and a paid free plan.",
)
def _amounts(root: Path, day: date) -> list[Broken]:
    _, subs = breaking(
        SE,
        day,
        [
            {"amount": "-1.00"},
            {"amount": "100000000.00"},
            {"amount": "1.234"},
            {"plan": "free", "amount": "4.99"},
        ],
        root=root,
    )
    return with_reasons(
        subs,
        [
            (reason(SE, "amount", "min"),),
            (reason(SE, "amount", "max"),),
            (reason(SE, "amount", "type"),),
            (cross(SE, "free_plan_amount"),),
        ],
    )


@kind(
    "user_rules",
    US,
    "quarantine",
    "Users signed up after the day, born in 1850 or three years ago.",
)
def _user_rules(root: Path, day: date) -> list[Broken]:
    _, users = breaking(
        US,
        day,
        [
            {"signup_date": (day + timedelta(days=1)).isoformat()},
            {"birth_year": 1850},
            {"birth_year": day.year - 3},
        ],
        root=root,
    )
    return with_reasons(
        users,
        [
            (reason(US, "signup_date", "after_day"),),
            (reason(US, "birth_year", "birth_year"),),
            (reason(US, "birth_year", "birth_year"),),
        ],
    )


@kind(
    "preview_paths_escaping",
    TR,
    "quarantine",
    "Preview paths outside audio/: absolute, climbing out with '..', another folder.",
    reasons=[reason(TR, "preview_path", "path")],
)
def _preview_paths(root: Path, day: date) -> list[Broken]:
    _, tracks = breaking(
        TR,
        day,
        [
            {"preview_path": "/etc/passwd"},
            {"preview_path": "audio/../../secrets.wav"},
            {"preview_path": "clips/x.wav"},
        ],
        root=root,
    )
    return tracks


@kind(
    "duplicate_events_within_day",
    LE,
    "quarantine",
    "The same play three times in one file and again in a second file of the day.",
    reasons=[contract.DUPLICATE_REASON],
)
def _dup_within(root: Path, day: date) -> list[Broken]:
    rows = clean_rows(LE, day)
    rows += [dict(rows[3]), dict(rows[3])]
    put(root, day, LE, rows)
    put(root, day, LE, [dict(rows[5]), good_play(f"x{day:%Y%m%d}", day=day)], "parquet", "part-001")
    eid3, eid5 = rows[3]["event_id"], rows[5]["event_id"]
    return [
        Broken(LE, f"{PART}.csv", 21, {"event_id": eid3}),
        Broken(LE, f"{PART}.csv", 22, {"event_id": eid3}),
        Broken(LE, "part-001.parquet", 1, {"event_id": eid5}),
    ]


@kind(
    "duplicate_events_across_days",
    LE,
    "quarantine",
    "Plays and a subscription event whose ids were accepted on the next day (ingested first).",
    prior_day=1,
)
def _dup_across(root: Path, day: date) -> list[Broken]:
    other = day + timedelta(days=1)
    write_clean_day(root, other)
    taken_play = clean_rows(LE, other)[7]["event_id"]
    taken_sub = clean_rows(SE, other)[0]["event_id"]
    _, plays = breaking(LE, day, [{"event_id": taken_play}], root=root)
    _, subs = breaking(SE, day, [{"event_id": taken_sub}], root=root)
    again = (contract.DUPLICATE_REASON + " on another day",)
    return with_reasons(plays + subs, [again, again])


@kind(
    "duplicate_dimension_keys",
    US,
    "quarantine",
    "A user twice in one file and a track in two files: the last delivery wins.",
)
def _dup_keys(root: Path, day: date) -> list[Broken]:
    users = clean_rows(US, day)
    users.append(dict(users[0], country="FI"))
    put(root, day, US, users)
    put(root, day, TR, [dict(clean_rows(TR, day)[1], title="Remastered")], "parquet", "part-001")
    user_again = (contract.DUPLICATE_KEY_REASON.format(key="user_id"),)
    track_again = (contract.DUPLICATE_KEY_REASON.format(key="track_id"),)
    return [
        # settled in SQL after typing: the payload holds the typed values
        Broken(US, f"{PART}.csv", 1, {"user_id": 1, "country": "SE"}, user_again),
        Broken(TR, f"{PART}.csv", 2, {"track_id": "t2"}, track_again),
    ]


@kind(
    "huge_event_ids",
    LE,
    "quarantine",
    "10 kB event ids sharing their first 5 kB (one hash), and an exact repeat of one.",
    reasons=[contract.DUPLICATE_REASON],
    verify=_verify_huge_ids,
)
def _huge_ids(root: Path, day: date) -> list[Broken]:
    prefix = f"{day}-" + "z" * 5000
    rows = clean_rows(LE, day)
    rows[0]["event_id"] = prefix + "a" * 5000
    rows[1]["event_id"] = prefix + "b" * 5000
    rows.append(dict(rows[0]))
    put(root, day, LE, rows)
    return [Broken(LE, f"{PART}.csv", 21, {"event_id": rows[0]["event_id"]})]


@kind(
    "several_rules_in_one_row",
    LE,
    "quarantine",
    "One row breaking four rules at once: every reason is listed.",
    reasons=[
        reason(LE, "user_id", "min"),
        reason(LE, "context_type", "allowed"),
        reason(LE, "device_type", "allowed"),
        cross(LE, "ms_played_over_duration"),
    ],
)
def _several(root: Path, day: date) -> list[Broken]:
    change = {"user_id": -1, "context_type": "x", "device_type": "y", "ms_played": 10_000_000}
    _, broken = breaking(LE, day, [change], root=root)
    return broken


# =========================================================================== audio


def _wav(path: Path, samples: np.ndarray, rate: int = 22_050) -> None:
    import soundfile as sf

    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), samples.astype(np.float32), rate, subtype="PCM_16", format="WAV")


def _noise(seconds: float, rate: int = 22_050) -> np.ndarray:
    return np.random.default_rng(7).uniform(-0.5, 0.5, int(seconds * rate))


def _clip_kind(
    name: str, description: str, suffix: str, audio_reason: str, make: Callable[[Path], None]
) -> None:
    def write(root: Path, day: date) -> list[Broken]:
        track_id = f"clip-{name}"
        preview = f"audio/{track_id}-{day:%Y%m%d}{suffix}"
        tracks = clean_rows(TR, day)
        tracks.append(dict(good_track(track_id, day), preview_path=preview))
        put(root, day, TR, tracks)
        make(root / preview)
        return [Broken("audio", preview, 0, {"track_id": track_id})]

    KINDS.append(
        BadInput(f"audio_{name}", description, TR, write, "quarantine", (audio_reason,), audio=True)
    )


def _write_bytes(data: bytes) -> Callable[[Path], None]:
    def make(path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    return make


def _truncated_wav(path: Path) -> None:
    _wav(path, _noise(1.0))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


_clip_kind(
    "text_named_wav",
    "A preview clip that is a text file named .wav.",
    ".wav",
    "corrupt",
    _write_bytes(b"this is not audio, it is a note someone saved as a clip\n" * 20),
)
_clip_kind(
    "png_named_mp3",
    "A PNG image named .mp3.",
    ".mp3",
    "corrupt",
    _write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8),
)
_clip_kind("empty_file", "A 0-byte .ogg clip.", ".ogg", "corrupt", _write_bytes(b""))
_clip_kind(
    "truncated_wav",
    "A WAV clip cut in half: its header declares twice the frames it holds.",
    ".wav",
    "corrupt",
    _truncated_wav,
)
_clip_kind(
    "silent_wav",
    "Two seconds of digital silence.",
    ".wav",
    "silent",
    lambda path: _wav(path, np.zeros(44_100)),
)
_clip_kind(
    "too_short_wav",
    "A 0.1 s clip.",
    ".wav",
    "too_short",
    lambda path: _wav(path, _noise(0.1)),
)


def _symlink_outside(path: Path) -> None:
    outside = path.parents[2] / f"outside-{path.stem}.wav"
    _wav(outside, _noise(1.0))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(outside)


_clip_kind(
    "symlink_escaping",
    "A clip under audio/ that is a symlink to a file outside the landing root.",
    ".wav",
    "unsafe_path",
    _symlink_outside,
)
_clip_kind(
    "missing_clip",
    "A preview_path naming a clip that was never delivered.",
    ".flac",
    "missing",
    lambda path: None,
)


KINDS_BY_NAME = {k.name: k for k in KINDS}
