"""Rows that break the landing contract on purpose, and where they went.

Each dataset-day gets about ``bad_rate`` x rows extra rows, taking the kinds of breakage in
turn (round-robin over the dataset's kinds, carried across days; CSV-only kinds have their own
turn on CSV days). A bad row is a mutated copy
of a real row of the same delivery, with a fresh key (event_id, user_id or track_id) so the
good world stays intact; duplicates are exact copies (or reuse an earlier day's event_id).
CSV-only kinds (values the Parquet types cannot hold) only occur on CSV days.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

import numpy as np
import pyarrow as pa

from ml_tasks.contract import (
    LISTENING_EVENTS,
    MIN_USER_AGE_YEARS,
    SUBSCRIPTION_EVENTS,
    TRACKS,
    USERS,
    Dataset,
)
from ml_tasks.simulate.tables import CSV, arrow_schema, string_schema, to_strings

Row = dict[str, object]


@dataclass
class Ctx:
    """What a mutation may look at."""

    day: dt.date
    rng: np.random.Generator
    previous_ids: pa.Array | None
    turn: int  # how many rows of this kind were made before (to alternate variants)


@dataclass(frozen=True)
class BadKind:
    """One way of breaking the contract."""

    name: str
    typed: Callable[[Row, Ctx], None] | None = None
    text: Callable[[Row, Ctx], None] | None = None
    fresh_key: bool = True
    needs_previous: bool = False

    @property
    def csv_only(self) -> bool:
        return self.text is not None


def _set(col: str, value: object) -> Callable[[Row, Ctx], None]:
    def apply(row: Row, ctx: Ctx) -> None:
        row[col] = value

    return apply


def _nonpositive(col: str) -> Callable[[Row, Ctx], None]:
    def apply(row: Row, ctx: Ctx) -> None:
        row[col] = 0 if ctx.turn % 2 == 0 else -int(ctx.rng.integers(1, 10**6))

    return apply


def _shift_day(col: str) -> Callable[[Row, Ctx], None]:
    def apply(row: Row, ctx: Ctx) -> None:
        sign = -1 if ctx.turn % 2 == 0 else 1
        row[col] = row[col] + dt.timedelta(days=sign)  # type: ignore[operator]

    return apply


def _future(col: str) -> Callable[[Row, Ctx], None]:
    def apply(row: Row, ctx: Ctx) -> None:
        ts: dt.datetime = row[col]  # type: ignore[assignment]
        row[col] = ts.replace(year=2099, day=min(ts.day, 28))

    return apply


def _missing(columns: tuple[str, ...]) -> Callable[[Row, Ctx], None]:
    def apply(row: Row, ctx: Ctx) -> None:
        row[columns[ctx.turn % len(columns)]] = None

    return apply


def _strip_zone(col: str) -> Callable[[Row, Ctx], None]:
    def apply(row: Row, ctx: Ctx) -> None:
        row[col] = str(row[col]).removesuffix("Z")

    return apply


def _ms_negative(row: Row, ctx: Ctx) -> None:
    row["ms_played"] = -int(ctx.rng.integers(1, 5000))


def _ms_over(row: Row, ctx: Ctx) -> None:
    dur = int(row["track_duration_ms"])  # type: ignore[arg-type]
    row["ms_played"] = 4 * dur + int(ctx.rng.integers(1, dur + 1))


def _previous_event_id(row: Row, ctx: Ctx) -> None:
    assert ctx.previous_ids is not None
    row["event_id"] = ctx.previous_ids[int(ctx.rng.integers(0, len(ctx.previous_ids)))].as_py()


def _amount_negative(row: Row, ctx: Ctx) -> None:
    amount = row["amount"] or Decimal("0")
    row["amount"] = -(amount if amount > 0 else Decimal("10.99"))  # type: ignore[operator]


def _free_with_amount(row: Row, ctx: Ctx) -> None:
    row["plan"] = "free"
    row["amount"] = Decimal("9.99")


def _signup_after(row: Row, ctx: Ctx) -> None:
    row["signup_date"] = ctx.day + dt.timedelta(days=int(ctx.rng.integers(1, 31)))


def _too_young(row: Row, ctx: Ctx) -> None:
    row["birth_year"] = ctx.day.year - min(3, MIN_USER_AGE_YEARS - 1)


def _duration_nonpositive(row: Row, ctx: Ctx) -> None:
    row["duration_ms"] = 0 if ctx.turn % 2 == 0 else -1000


#: Kinds of breakage per dataset, in round-robin order.
KINDS: dict[str, tuple[BadKind, ...]] = {
    LISTENING_EVENTS.name: (
        BadKind("user_id_nonpositive", _nonpositive("user_id")),
        BadKind("empty_track_id", _set("track_id", "")),
        BadKind("played_at_outside_day", _shift_day("played_at")),
        BadKind("played_at_future", _future("played_at")),
        BadKind("ms_played_negative", _ms_negative),
        BadKind("ms_played_over_duration", _ms_over),
        BadKind("track_duration_zero", _set("track_duration_ms", 0)),
        BadKind("unknown_context_type", _set("context_type", "podcast")),
        BadKind("unknown_device_type", _set("device_type", "smart_fridge")),
        BadKind(
            "missing_value",
            _missing(
                (
                    "user_id",
                    "track_id",
                    "played_at",
                    "ms_played",
                    "track_duration_ms",
                    "skipped",
                    "context_type",
                    "device_type",
                    "shared",
                    "liked",
                )
            ),
        ),
        BadKind("duplicate_event_id_within_day", fresh_key=False),
        BadKind(
            "duplicate_event_id_across_days",
            _previous_event_id,
            fresh_key=False,
            needs_previous=True,
        ),
        BadKind("user_id_not_integer", text=_set("user_id", "abc")),
        BadKind("skipped_not_boolean", text=_set("skipped", "maybe")),
        BadKind("played_at_unparseable", text=_set("played_at", "not-a-time")),
        BadKind("played_at_without_offset", text=_strip_zone("played_at")),
    ),
    SUBSCRIPTION_EVENTS.name: (
        BadKind("amount_negative", _amount_negative),
        BadKind("free_plan_amount", _free_with_amount),
        BadKind("currency_invalid", _set("currency", "usd1")),
        BadKind("unknown_plan", _set("plan", "premium_platinum")),
        BadKind("unknown_event_type", _set("event_type", "pause")),
        BadKind("user_id_nonpositive", _nonpositive("user_id")),
        BadKind("event_at_outside_day", _shift_day("event_at")),
        BadKind(
            "missing_value",
            _missing(
                (
                    "user_id",
                    "event_at",
                    "event_type",
                    "plan",
                    "amount",
                    "currency",
                    "auto_renew",
                )
            ),
        ),
        BadKind("amount_not_number", text=_set("amount", "ten")),
        BadKind("event_at_unparseable", text=_set("event_at", "yesterday")),
    ),
    USERS.name: (
        BadKind("user_id_nonpositive", _nonpositive("user_id")),
        BadKind("signup_date_after_day", _signup_after),
        BadKind("country_invalid", _set("country", "XYZ")),
        BadKind("birth_year_too_old", _set("birth_year", 1850)),
        BadKind("birth_year_too_young", _too_young),
        BadKind("unknown_acquisition_channel", _set("acquisition_channel", "tiktok")),
        BadKind("duplicate_user_id", fresh_key=False),
        BadKind("missing_value", _missing(("signup_date", "country", "acquisition_channel"))),
        BadKind("signup_date_unparseable", text=_set("signup_date", "not-a-date")),
    ),
    TRACKS.name: (
        BadKind("empty_artist_id", _set("artist_id", "")),
        BadKind("duration_nonpositive", _duration_nonpositive),
        BadKind("preview_path_absolute", _set("preview_path", "/etc/passwd")),
        BadKind("preview_path_traversal", _set("preview_path", "audio/../../etc/passwd")),
        BadKind("empty_track_id", _set("track_id", "")),
        BadKind(
            "missing_value",
            _missing(
                (
                    "title",
                    "artist_id",
                    "release_date",
                    "duration_ms",
                    "explicit",
                )
            ),
        ),
        BadKind("duration_not_integer", text=_set("duration_ms", "3:45")),
    ),
}


def kinds_for(dataset_name: str, csv: bool = True) -> tuple[str, ...]:
    """Names of the kinds a dataset can get (``csv=False``: those possible in Parquet)."""
    return tuple(k.name for k in KINDS[dataset_name] if csv or not k.csv_only)


@dataclass
class Injected:
    """A day's delivery with its bad rows mixed in, and where each bad row is."""

    table: pa.Table  # typed (Parquet days) or all-string (CSV days)
    rows: np.ndarray  # row index of each bad row in ``table``
    good_rows: np.ndarray  # row index in ``table`` of each row of the clean delivery
    keys: list[str]
    kinds: list[str]


class BadRowInjector:
    """Adds contract-breaking rows to each dataset-day, round-robin over the kinds."""

    def __init__(
        self,
        rate: float,
        rng: np.random.Generator,
        fresh_keys: dict[str, Callable[[int], object]],
    ) -> None:
        self.rate = rate
        self.rng = rng
        self.fresh_keys = fresh_keys
        self._cursor = dict.fromkeys(KINDS, 0)
        self._text_cursor = dict.fromkeys(KINDS, 0)
        self._made: dict[tuple[str, str], int] = {}
        self._fresh = dict.fromkeys(KINDS, 0)

    def _next_kinds(self, ds: str, k: int, fmt: str, has_previous: bool) -> list[BadKind]:
        """The next ``k`` kinds: typed kinds in turn; on CSV days, text kinds take their share.

        On a CSV day, row j of the day is a CSV-only kind when j mod (number of kinds) falls
        below the number of CSV-only kinds (so the first bad row of a CSV day is one).
        """
        kinds = KINDS[ds]
        typed = [kd for kd in kinds if not kd.csv_only]
        text = [kd for kd in kinds if kd.csv_only]
        out: list[BadKind] = []
        for j in range(k):
            if fmt == CSV and text and j % len(kinds) < len(text):
                out.append(text[self._text_cursor[ds] % len(text)])
                self._text_cursor[ds] += 1
                continue
            while True:
                kind = typed[self._cursor[ds] % len(typed)]
                self._cursor[ds] += 1
                if has_previous or not kind.needs_previous:
                    break
            out.append(kind)
        return out

    def inject(
        self,
        ds: Dataset,
        table: pa.Table,
        day: dt.date,
        fmt: str,
        previous_ids: pa.Array | None = None,
    ) -> Injected:
        """Mix bad rows into ``table`` (rendered as text on CSV days)."""
        rng = self.rng
        n = table.num_rows
        k = int(np.floor(self.rate * n + rng.random())) if n else 0
        has_previous = previous_ids is not None and len(previous_ids) > 0
        kinds = self._next_kinds(ds.name, k, fmt, has_previous)
        src = rng.integers(0, max(n, 1), k)
        ctxs = []
        for kind in kinds:  # the n-th row of a kind alternates variants by ``turn``
            turn = self._made.get((ds.name, kind.name), 0)
            self._made[(ds.name, kind.name)] = turn + 1
            ctxs.append(Ctx(day=day, rng=rng, previous_ids=previous_ids, turn=turn))
        rows = table.take(pa.array(src, type=pa.int64())).to_pylist()
        for row, kind, ctx in zip(rows, kinds, ctxs, strict=True):
            if kind.fresh_key:
                row[ds.key] = self.fresh_keys[ds.name](self._fresh[ds.name])
                self._fresh[ds.name] += 1
            if kind.typed is not None:
                kind.typed(row, ctx)
        bad = pa.Table.from_pylist(rows, schema=arrow_schema(ds))
        good = table
        if fmt == CSV:
            good = to_strings(table, ds)
            text_rows = to_strings(bad, ds).to_pylist()
            for row, kind, ctx in zip(text_rows, kinds, ctxs, strict=True):
                if kind.text is not None:
                    kind.text(row, ctx)
            bad = pa.Table.from_pylist(text_rows, schema=string_schema(ds))
        keys = ["" if r[ds.key] is None else str(r[ds.key]) for r in rows]
        # bad rows go to random places among the good rows; an exact copy of a row goes
        # after it for events (the platform keeps the first delivery) and before it for
        # dimensions (the last delivery of a key wins), so the copy is the one refused
        slot = rng.integers(0, n + 1, k)
        for i, kind in enumerate(kinds):
            if kind.name.startswith("duplicate_") and kind.name.endswith("within_day"):
                slot[i] = rng.integers(src[i] + 1, n + 1)
            elif kind.name.startswith("duplicate_") and not ds.is_event:
                slot[i] = rng.integers(0, src[i] + 1)
        key = np.concatenate([np.arange(n, dtype=np.int64) * 2 + 1, slot * 2])
        order = np.argsort(key, kind="stable")
        merged = pa.concat_tables([good, bad]).take(pa.array(order, type=pa.int64()))
        pos = np.empty(n + k, dtype=np.int64)
        pos[order] = np.arange(n + k)
        return Injected(merged, pos[n:], pos[:n], keys, [kd.name for kd in kinds])
