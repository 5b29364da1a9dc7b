"""The landing data contract (DATA_CONTRACT.md) as data.

This module is the one place the contract's datasets, columns, types and rules are defined.
Ingestion checks rows with it, the Great Expectations suites are generated from it, the
simulator writes files that follow it, and the bad-row generator breaks it on purpose.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

CONTRACT_VERSION = "1.0"

SUCCESS_MARKER = "_SUCCESS"
FILE_SUFFIXES = (".parquet", ".csv")
AUDIO_SUFFIXES = (".wav", ".ogg", ".mp3", ".flac")

CONTEXT_TYPES = ("playlist", "album", "artist", "search", "radio", "recommendation", "other")
DEVICE_TYPES = ("mobile", "desktop", "web", "tv", "speaker", "other")
SUBSCRIPTION_EVENT_TYPES = (
    "signup",
    "renewal",
    "upgrade",
    "downgrade",
    "cancel",
    "payment_failed",
    "reactivate",
)
PLANS = ("free", "premium_individual", "premium_duo", "premium_family", "premium_student")
PAID_PLANS = tuple(p for p in PLANS if p != "free")
ACQUISITION_CHANNELS = ("organic", "paid_social", "search_ads", "referral", "partner", "other")

#: A preview path is relative, under ``audio/``, and never climbs out with ``..``.
AUDIO_PATH_PATTERN = r"^audio/[^/\\]+(/[^/\\]+)*$"
PARENT_DIR_PATTERN = r"(^|/)\.\.(/|$)"
#: A listening event may last at most this many times the track's duration.
MAX_PLAY_TO_DURATION_RATIO = 4
#: Users are at least this many years old in the year of the folder's day.
MIN_USER_AGE_YEARS = 10
MIN_BIRTH_YEAR = 1900


class Kind(StrEnum):
    """Logical column types of the contract, with their PostgreSQL type."""

    STRING = "text"
    INT16 = "smallint"
    INT32 = "integer"
    INT64 = "bigint"
    BOOL = "boolean"
    TIMESTAMP = "timestamptz"
    DATE = "date"
    DECIMAL = "numeric(10,2)"

    @property
    def sql_type(self) -> str:
        return self.value

    @property
    def is_integer(self) -> bool:
        return self in (Kind.INT16, Kind.INT32, Kind.INT64)


def landing_arrow_type(kind: Kind):
    """The Arrow type a column of ``kind`` has in a landing Parquet file."""
    import pyarrow as pa

    return {
        Kind.STRING: pa.string(),
        Kind.INT16: pa.int16(),
        Kind.INT32: pa.int32(),
        Kind.INT64: pa.int64(),
        Kind.BOOL: pa.bool_(),
        Kind.TIMESTAMP: pa.timestamp("us", tz="UTC"),
        Kind.DATE: pa.date32(),
        Kind.DECIMAL: pa.decimal128(10, 2),
    }[kind]


INT_BOUNDS = {
    Kind.INT16: (-(2**15), 2**15 - 1),
    Kind.INT32: (-(2**31), 2**31 - 1),
    Kind.INT64: (-(2**63), 2**63 - 1),
}


@dataclass(frozen=True)
class Column:
    """One contract column and the rules on its own values.

    Rules that relate two columns, or a column and the folder's day, are flags here
    (``in_day``, ``not_after_day``...) or :class:`CrossRule` objects on the dataset.
    """

    name: str
    kind: Kind
    description: str
    nullable: bool = False
    non_empty: bool = False
    minimum: float | None = None
    minimum_exclusive: bool = False
    maximum: float | None = None
    allowed: tuple[str, ...] | None = None
    pattern: str | None = None
    in_day: bool = False
    not_future: bool = False
    not_after_day: bool = False
    birth_year: bool = False
    relative_path: bool = False


@dataclass(frozen=True)
class CrossRule:
    """A rule over several columns of one row.

    ``code`` names the rule in quarantine reasons; ``sql_violation`` is the SQL predicate
    that is true for a violating row (used by the GX suites over the raw tables).
    """

    code: str
    columns: tuple[str, ...]
    message: str
    sql_violation: str


@dataclass(frozen=True)
class Dataset:
    """A landing dataset: its folder, raw table, columns and rules."""

    name: str
    description: str
    columns: tuple[Column, ...]
    key: str
    is_event: bool
    time_column: str | None = None
    cross_rules: tuple[CrossRule, ...] = field(default_factory=tuple)
    references: tuple[tuple[str, str], ...] = field(default_factory=tuple)

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    def column(self, name: str) -> Column:
        for col in self.columns:
            if col.name == name:
                return col
        raise KeyError(f"{self.name} has no column {name!r}")

    @property
    def raw_table(self) -> str:
        """The raw table that holds accepted rows (events) or all accepted versions (dims)."""
        return f"raw.{self.name}" if self.is_event else f"raw.{self.name[:-1]}_versions"

    @property
    def key_runs_table(self) -> str | None:
        """For events: one sorted run of accepted event-id hashes per day (migration 0017)."""
        return f"raw.{self.name}_key_runs" if self.is_event else None

    @property
    def current_table(self) -> str | None:
        """For dimensions: the table of current rows, one per key."""
        return None if self.is_event else f"raw.{self.name}"


LISTENING_EVENTS = Dataset(
    name="listening_events",
    description="One row per play.",
    key="event_id",
    is_event=True,
    time_column="played_at",
    columns=(
        Column(
            "event_id",
            Kind.STRING,
            "Unique id of the play; a repeat is a duplicate delivery.",
            non_empty=True,
        ),
        Column("user_id", Kind.INT64, "Listener.", minimum=0, minimum_exclusive=True),
        Column("track_id", Kind.STRING, "Track played.", non_empty=True),
        Column(
            "played_at",
            Kind.TIMESTAMP,
            "When the play started (UTC).",
            in_day=True,
            not_future=True,
        ),
        Column("ms_played", Kind.INT32, "Milliseconds played.", minimum=0),
        Column(
            "track_duration_ms",
            Kind.INT32,
            "Track length in milliseconds.",
            minimum=0,
            minimum_exclusive=True,
        ),
        Column("skipped", Kind.BOOL, "The user skipped before the end."),
        Column("context_type", Kind.STRING, "Where the play started from.", allowed=CONTEXT_TYPES),
        Column("device_type", Kind.STRING, "Device class.", allowed=DEVICE_TYPES),
        Column("shared", Kind.BOOL, "The user shared the track from this play."),
        Column("liked", Kind.BOOL, "The user saved/liked the track during this play."),
    ),
    cross_rules=(
        CrossRule(
            code="ms_played_over_duration",
            columns=("ms_played", "track_duration_ms"),
            message=f"ms_played: more than {MAX_PLAY_TO_DURATION_RATIO} x track_duration_ms",
            sql_violation=f"ms_played > {MAX_PLAY_TO_DURATION_RATIO} * track_duration_ms",
        ),
    ),
    references=(("user_id", "users"), ("track_id", "tracks")),
)

SUBSCRIPTION_EVENTS = Dataset(
    name="subscription_events",
    description="Subscription lifecycle events.",
    key="event_id",
    is_event=True,
    time_column="event_at",
    columns=(
        Column("event_id", Kind.STRING, "Unique id of the event.", non_empty=True),
        Column("user_id", Kind.INT64, "Subscriber.", minimum=0, minimum_exclusive=True),
        Column("event_at", Kind.TIMESTAMP, "When it happened (UTC).", in_day=True, not_future=True),
        Column("event_type", Kind.STRING, "Lifecycle event.", allowed=SUBSCRIPTION_EVENT_TYPES),
        Column("plan", Kind.STRING, "Plan after the event.", allowed=PLANS),
        Column(
            "amount", Kind.DECIMAL, "Amount charged; 0 for free.", minimum=0, maximum=99_999_999.99
        ),
        Column("currency", Kind.STRING, "ISO 4217 currency code.", pattern=r"^[A-Z]{3}$"),
        Column("auto_renew", Kind.BOOL, "Whether the plan renews automatically."),
    ),
    cross_rules=(
        CrossRule(
            code="free_plan_amount",
            columns=("plan", "amount"),
            message="amount: must be 0 for the free plan",
            sql_violation="plan = 'free' AND amount <> 0",
        ),
    ),
    references=(("user_id", "users"),),
)

USERS = Dataset(
    name="users",
    description="New or changed users (upserts).",
    key="user_id",
    is_event=False,
    columns=(
        Column("user_id", Kind.INT64, "User key.", minimum=0, minimum_exclusive=True),
        Column("signup_date", Kind.DATE, "Day the user signed up.", not_after_day=True),
        Column("country", Kind.STRING, "ISO 3166-1 alpha-2 country.", pattern=r"^[A-Z]{2}$"),
        Column(
            "birth_year", Kind.INT16, "Year of birth, if known.", nullable=True, birth_year=True
        ),
        Column("gender", Kind.STRING, "Free text, if given.", nullable=True),
        Column(
            "acquisition_channel",
            Kind.STRING,
            "How the user was acquired.",
            allowed=ACQUISITION_CHANNELS,
        ),
    ),
)

TRACKS = Dataset(
    name="tracks",
    description="New or changed catalogue tracks (upserts).",
    key="track_id",
    is_event=False,
    columns=(
        Column("track_id", Kind.STRING, "Track key.", non_empty=True),
        Column("title", Kind.STRING, "Track title."),
        Column("artist_id", Kind.STRING, "Main artist.", non_empty=True),
        Column("album_id", Kind.STRING, "Album, if any.", nullable=True),
        Column("release_date", Kind.DATE, "Release day."),
        Column(
            "duration_ms", Kind.INT32, "Length in milliseconds.", minimum=0, minimum_exclusive=True
        ),
        Column(
            "genre", Kind.STRING, "Catalogue genre label; null = to be classified.", nullable=True
        ),
        Column("explicit", Kind.BOOL, "Explicit lyrics."),
        Column(
            "preview_path",
            Kind.STRING,
            "Preview clip path under audio/.",
            nullable=True,
            relative_path=True,
        ),
    ),
)

#: Datasets in the order a day is ingested: dimensions first, so events can be checked
#: against the users and tracks known on that day.
DATASETS: tuple[Dataset, ...] = (USERS, TRACKS, LISTENING_EVENTS, SUBSCRIPTION_EVENTS)
DATASETS_BY_NAME = {d.name: d for d in DATASETS}


def dataset(name: str) -> Dataset:
    """Look a dataset up by its landing folder name."""
    try:
        return DATASETS_BY_NAME[name]
    except KeyError as exc:
        known = ", ".join(DATASETS_BY_NAME)
        raise KeyError(f"unknown dataset {name!r}; the contract has {known}") from exc


def rule_messages(col: Column) -> dict[str, str]:
    """The quarantine reason text for each rule a column can break (one wording everywhere)."""
    name = col.name
    msgs = {
        "missing": f"{name}: missing value",
        "type": (
            f"{name}: not an ISO 8601 timestamp with a UTC offset"
            if col.kind is Kind.TIMESTAMP
            else f"{name}: not a valid {col.kind.name.lower()}"
        ),
    }
    if col.kind is Kind.STRING:
        msgs["nul"] = f"{name}: contains a NUL character (text cannot hold it)"
    if col.non_empty:
        msgs["empty"] = f"{name}: empty string"
    if col.minimum is not None:
        op = ">" if col.minimum_exclusive else ">="
        msgs["min"] = f"{name}: must be {op} {col.minimum:g}"
    if col.maximum is not None:
        msgs["max"] = f"{name}: must be <= {col.maximum:g}"
    if col.allowed is not None:
        msgs["allowed"] = f"{name}: not one of {', '.join(col.allowed)}"
    if col.pattern is not None:
        msgs["pattern"] = f"{name}: does not match {col.pattern}"
    if col.in_day:
        msgs["in_day"] = f"{name}: outside the folder's day"
    if col.not_future:
        msgs["future"] = f"{name}: in the future"
    if col.not_after_day:
        msgs["after_day"] = f"{name}: after the folder's day"
    if col.birth_year:
        msgs["birth_year"] = f"{name}: outside {MIN_BIRTH_YEAR}..(year - {MIN_USER_AGE_YEARS})"
    if col.relative_path:
        msgs["path"] = f"{name}: not a relative path under audio/"
    return msgs


DUPLICATE_REASON = "event_id: duplicate delivery (already accepted)"
DUPLICATE_KEY_REASON = "{key}: duplicate key in the day's delivery (a later row wins)"
