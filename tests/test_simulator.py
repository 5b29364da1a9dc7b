"""Tests of the data simulator (ml_tasks.simulate) on small worlds."""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import re
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from ml_tasks.contract import (
    ACQUISITION_CHANNELS,
    CONTEXT_TYPES,
    DATASETS,
    DEVICE_TYPES,
    LISTENING_EVENTS,
    MAX_PLAY_TO_DURATION_RATIO,
    MIN_BIRTH_YEAR,
    MIN_USER_AGE_YEARS,
    PLANS,
    SUBSCRIPTION_EVENT_TYPES,
    SUBSCRIPTION_EVENTS,
    SUCCESS_MARKER,
    TRACKS,
    USERS,
    Dataset,
    Kind,
    landing_arrow_type,
)
from ml_tasks.simulate import BAD_KINDS, GENRES, simulate_world
from ml_tasks.simulate import core as sim_core
from ml_tasks.simulate.tables import csv_bytes

START = dt.date(2026, 11, 1)
TS_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{3})?Z$")
DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
DECIMAL_RE = re.compile(r"^-?\d+\.\d{2}$")
PARQUET_TYPES = {kind: landing_arrow_type(kind) for kind in Kind}


# ------------------------------------------------------------------ worlds


def _simulate(root: Path, **kw):
    args = {
        "users": 400,
        "tracks": 250,
        "start": START,
        "days": 6,
        "seed": 7,
        "bad_rate": 0.02,
        "bot_share": 0.02,
        "clip_seconds": 0.5,
        "sample_rate": 8000,
    }
    args.update(kw)
    out = root / "landing"
    summary = simulate_world(out, **args)
    return summary, out, summary.truth_out


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A small world with a few bad rows, bots, previews."""
    return _simulate(tmp_path_factory.mktemp("world"))


@pytest.fixture(scope="module")
def bad_world(tmp_path_factory):
    """Many bad rows, so every kind shows up."""
    return _simulate(
        tmp_path_factory.mktemp("bad"),
        users=1000,
        tracks=2000,
        bad_rate=0.25,
        preview_share=0.0,
        seed=3,
    )


@pytest.fixture(scope="module")
def long_world(tmp_path_factory):
    """Long enough (40 days) for the contract's 30-day dormancy rule to be observable."""
    return _simulate(
        tmp_path_factory.mktemp("long"),
        users=300,
        tracks=200,
        days=40,
        bot_share=0.0,
        preview_share=0.0,
        seed=5,
        bad_rate=0.0,
    )


# ----------------------------------------------------------------- reading


def _days(summary) -> list[dt.date]:
    return [summary.start + dt.timedelta(days=i) for i in range(summary.days)]


def _files(out: Path, ds: Dataset) -> list[Path]:
    paths = (out / ds.name).glob("dt=*/part-*")
    return sorted(p for p in paths if p.suffix in (".csv", ".parquet"))


def _raw(path: Path) -> pd.DataFrame:
    """A landing file as read by a tolerant reader: CSV cells as text, Parquet typed."""
    if path.suffix == ".csv":
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    return pq.read_table(path).to_pandas()


def _load(out: Path, ds: Dataset) -> pd.DataFrame:
    frames = []
    for path in _files(out, ds):
        df = _raw(path)
        df["_file"] = path.relative_to(out).as_posix()
        df["_row"] = np.arange(1, len(df) + 1)  # 1 = first data row
        df["_dt"] = dt.date.fromisoformat(path.parent.name[3:])
        df["_csv"] = path.suffix == ".csv"
        frames.append(df)
    return pd.concat(frames, ignore_index=True)


def _bad(truth: Path) -> pd.DataFrame:
    return pd.read_parquet(truth / "bad_rows.parquet")


def _without_bad(df: pd.DataFrame, truth: Path, ds: Dataset) -> pd.DataFrame:
    bad = _bad(truth)
    bad = bad[bad.dataset == ds.name][["file", "row_number"]]
    key = df[["_file", "_row"]].rename(columns={"_file": "file", "_row": "row_number"})
    marked = key.merge(bad.assign(_bad=True), how="left", on=["file", "row_number"])["_bad"]
    return df[~marked.fillna(False).to_numpy(dtype=bool)].copy()


def _typed(df: pd.DataFrame, ds: Dataset) -> pd.DataFrame:
    """Parse text cells (CSV rows) the strict way; a cell that does not parse fails the test."""
    out = pd.DataFrame(index=df.index)
    is_csv = df["_csv"].to_numpy(dtype=bool)
    for col in ds.columns:
        values = pd.Series(df[col.name].astype(object).to_numpy(), index=df.index, dtype=object)
        text = values[is_csv].astype(str)
        text = text[text != ""]
        values[is_csv] = None
        if col.kind.is_integer:
            assert text.str.fullmatch(r"-?\d+").all(), col.name
            parsed = text.map(int)
        elif col.kind is Kind.BOOL:
            assert text.isin(["true", "false"]).all(), col.name
            parsed = text == "true"
        elif col.kind is Kind.TIMESTAMP:
            assert text.str.match(TS_RE).all(), col.name
            parsed = pd.Series(list(pd.to_datetime(text, utc=True)), index=text.index)
        elif col.kind is Kind.DATE:
            assert text.str.match(DATE_RE).all(), col.name
            parsed = text.map(dt.date.fromisoformat)
        elif col.kind is Kind.DECIMAL:
            assert text.str.match(DECIMAL_RE).all(), col.name
            parsed = text.map(float)
        else:
            parsed = text
        values[parsed.index] = parsed.astype(object)
        if col.kind is Kind.DECIMAL:
            values = values.map(lambda v: None if v is None else float(v))
        out[col.name] = values
    out["_dt"] = df["_dt"]
    return out


def _good(out: Path, truth: Path, ds: Dataset) -> pd.DataFrame:
    return _typed(_without_bad(_load(out, ds), truth, ds), ds)


# ------------------------------------------------------------------- tests


def test_layout_success_markers_and_formats(world):
    summary, out, _ = world
    for i, day in enumerate(_days(summary)):
        suffix = ".parquet" if i % 2 == 0 else ".csv"
        for ds in DATASETS:
            folder = out / ds.name / f"dt={day.isoformat()}"
            marker = folder / SUCCESS_MARKER
            assert marker.is_file() and marker.stat().st_size == 0, folder
            parts = sorted(folder.glob("part-*"))
            assert parts and all(p.suffix == suffix for p in parts), parts
            assert all(marker.stat().st_mtime_ns >= p.stat().st_mtime_ns for p in parts)
    assert summary.files_written == summary.days * len(DATASETS)
    assert summary.success_markers == summary.days * len(DATASETS)
    assert not (out / "_truth").exists() and summary.truth_out == out.parent / "landing_truth"


def test_columns_and_types_follow_the_contract(world):
    _, out, _ = world
    for ds in DATASETS:
        for path in _files(out, ds):
            if path.suffix == ".parquet":
                schema = pq.read_schema(path)
                assert tuple(schema.names) == ds.column_names
                for col in ds.columns:
                    assert schema.field(col.name).type == PARQUET_TYPES[col.kind], col.name
            else:
                with path.open(encoding="utf-8", newline="") as fh:
                    assert tuple(next(csv.reader(fh))) == ds.column_names


def test_csv_cells_are_formatted_per_contract(world):
    _, out, truth = world
    csv_files = [p for p in _files(out, LISTENING_EVENTS) if p.suffix == ".csv"]
    assert csv_files
    good = _without_bad(_load(out, LISTENING_EVENTS), truth, LISTENING_EVENTS)
    good = good[good._csv]
    assert good.played_at.str.match(TS_RE).all()
    assert good.skipped.isin(["true", "false"]).all() and good.liked.isin(["true", "false"]).all()
    subs = _without_bad(_load(out, SUBSCRIPTION_EVENTS), truth, SUBSCRIPTION_EVENTS)
    subs = subs[subs._csv]
    assert subs.amount.str.match(DECIMAL_RE).all()
    assert subs.event_at.str.match(TS_RE).all()
    users = _without_bad(_load(out, USERS), truth, USERS)
    assert users[users._csv].signup_date.str.match(DATE_RE).all()


def test_csv_quoting_round_trips():
    text = pa.table(
        {"a": ["plain", 'say "hi"', "x,y", "line\nbreak", None], "b": ["1", "2", "3", "4", "5"]}
    )
    raw = csv_bytes(text).decode("utf-8")
    assert raw.splitlines()[0] == "a,b"
    assert raw.splitlines()[1] == "plain,1"  # no needless quotes
    rows = list(csv.reader(io.StringIO(raw, newline="")))
    assert rows[1:] == [
        ["plain", "1"],
        ['say "hi"', "2"],
        ["x,y", "3"],
        ["line\nbreak", "4"],
        ["", "5"],
    ]


def test_good_rows_follow_contract_rules(world):
    _, out, truth = world
    le = _good(out, truth, LISTENING_EVENTS)
    assert len(le) > 1000
    assert (le.user_id > 0).all()
    assert (le.track_id.str.len() > 0).all()
    played = pd.to_datetime(le.played_at, utc=True)
    assert (played.dt.date == le._dt).all()
    assert (le.ms_played >= 0).all() and (le.track_duration_ms > 0).all()
    assert (le.ms_played <= MAX_PLAY_TO_DURATION_RATIO * le.track_duration_ms).all()
    assert le.context_type.isin(CONTEXT_TYPES).all() and le.device_type.isin(DEVICE_TYPES).all()
    for col in ("skipped", "shared", "liked", "event_id"):
        assert le[col].notna().all()

    se = _good(out, truth, SUBSCRIPTION_EVENTS)
    assert len(se) > 0
    assert (se.user_id > 0).all()
    assert (pd.to_datetime(se.event_at, utc=True).dt.date == se._dt).all()
    assert se.event_type.isin(SUBSCRIPTION_EVENT_TYPES).all() and se.plan.isin(PLANS).all()
    amount = se.amount.astype(float)
    assert (amount >= 0).all() and (amount[se.plan == "free"] == 0).all()
    assert se.currency.str.fullmatch(r"[A-Z]{3}").all()

    us = _good(out, truth, USERS)
    assert (us.user_id > 0).all()
    assert (us.signup_date <= us._dt).all()
    assert us.country.str.fullmatch(r"[A-Z]{2}").all()
    by = us.birth_year.dropna().astype(int)
    years = us.loc[by.index, "_dt"].map(lambda d: d.year)
    assert ((by >= MIN_BIRTH_YEAR) & (by <= years - MIN_USER_AGE_YEARS)).all()
    assert us.acquisition_channel.isin(ACQUISITION_CHANNELS).all()
    assert us.birth_year.isna().any() and us.gender.isna().any()

    tr = _good(out, truth, TRACKS)
    assert (tr.track_id.str.len() > 0).all() and (tr.artist_id.str.len() > 0).all()
    assert (tr.duration_ms > 0).all()
    paths = tr.preview_path.dropna()
    assert paths.str.fullmatch(r"audio/t[0-9a-f]{8}\.wav").all()
    assert tr.genre.dropna().isin(GENRES).all()


def test_event_ids_unique_apart_from_recorded_duplicates(world):
    _, out, truth = world
    le = _load(out, LISTENING_EVENTS)
    bad = _bad(truth)
    dup = bad[bad.kind.str.startswith("duplicate_event_id")]
    assert set(dup.kind) == {"duplicate_event_id_within_day", "duplicate_event_id_across_days"}
    rest = _without_bad(le, truth, LISTENING_EVENTS)
    assert rest.event_id.is_unique
    assert set(dup.row_key) <= set(rest.event_id)
    # an across-days duplicate reuses the id of an earlier day's row, with a time in its own day
    first_day = rest.set_index("event_id")._dt
    across = dup[dup.kind == "duplicate_event_id_across_days"]
    assert (across.row_key.map(first_day).to_numpy() < across.dt.to_numpy()).all()
    within = dup[dup.kind == "duplicate_event_id_within_day"]
    assert (within.row_key.map(first_day).to_numpy() == within.dt.to_numpy()).all()


def test_bad_rows_share_and_location(world):
    summary, out, truth = world
    bad = _bad(truth)
    assert summary.total_bad_rows == len(bad) > 0
    assert summary.bad_rows[LISTENING_EVENTS.name] == (bad.dataset == LISTENING_EVENTS.name).sum()
    share = summary.bad_rows[LISTENING_EVENTS.name] / summary.rows[LISTENING_EVENTS.name]
    assert 0.01 < share < 0.03  # bad_rate 0.02
    le = _load(out, LISTENING_EVENTS).set_index(["_file", "_row"])
    rows = bad[bad.dataset == LISTENING_EVENTS.name]
    ids = le.loc[list(zip(rows.file, rows.row_number, strict=True)), "event_id"]
    assert list(ids) == list(rows.row_key)


def test_every_bad_kind_appears_and_breaks_its_rule(bad_world):
    _, out, truth = bad_world
    bad = _bad(truth)
    for name, kinds in BAD_KINDS.items():
        assert set(bad[bad.dataset == name].kind) == {k.name for k in kinds}, name
    le = _load(out, LISTENING_EVENTS).set_index(["_file", "_row"])
    rows = bad[bad.dataset == LISTENING_EVENTS.name]
    got = le.loc[list(zip(rows.file, rows.row_number, strict=True))].reset_index()
    got["kind"] = rows.kind.to_numpy()

    def cells(kind: str, col: str) -> pd.Series:
        return got.loc[got.kind == kind, col].astype(str)

    def numbers(kind: str, col: str) -> pd.Series:
        return pd.to_numeric(got.loc[got.kind == kind, col])

    assert (numbers("user_id_nonpositive", "user_id") <= 0).all()
    assert (cells("empty_track_id", "track_id").isin(["", "None"])).all()
    assert cells("played_at_future", "played_at").str.startswith("2099").all()
    assert (numbers("ms_played_negative", "ms_played") < 0).all()
    assert cells("unknown_context_type", "context_type").eq("podcast").all()
    assert cells("user_id_not_integer", "user_id").eq("abc").all()
    assert cells("skipped_not_boolean", "skipped").eq("maybe").all()
    assert (
        cells("played_at_without_offset", "played_at")
        .str.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}")
        .all()
    )
    outside = got[got.kind == "played_at_outside_day"]
    assert (pd.to_datetime(outside.played_at, utc=True).dt.date != outside._dt).all()
    over = got[(got.kind == "ms_played_over_duration")]
    assert (pd.to_numeric(over.ms_played) > 4 * pd.to_numeric(over.track_duration_ms)).all()
    # CSV-only kinds only on CSV days
    csv_only = {k.name for k in BAD_KINDS[LISTENING_EVENTS.name] if k.csv_only}
    assert bad[bad.kind.isin(csv_only)].file.str.endswith(".csv").all()
    users = _load(out, USERS)
    ub = bad[(bad.dataset == USERS.name) & (bad.kind == "country_invalid")]
    assert set(
        users.set_index(["_file", "_row"]).loc[
            list(zip(ub.file, ub.row_number, strict=True)), "country"
        ]
    ) == {"XYZ"}


def test_unknown_references_are_flagged_not_bad(world):
    summary, out, truth = world
    refs = pd.read_parquet(truth / "unknown_refs.parquet")
    assert summary.unknown_references == len(refs)
    le = _load(out, LISTENING_EVENTS).set_index(["_file", "_row"])
    users = set(_load(out, USERS).user_id.astype(str))
    tracks = set(_load(out, TRACKS).track_id.astype(str))
    hit = le.loc[list(zip(refs.file, refs.row_number, strict=True))]
    assert list(hit.event_id) == list(refs.event_id)
    for (_, row), kind in zip(hit.iterrows(), refs.kind, strict=True):
        if kind == "unknown_user":
            assert str(row.user_id) not in users
        else:
            assert kind == "unknown_track" and row.track_id not in tracks
    assert not set(refs.event_id) & set(_bad(truth).row_key)


def test_bots_stream_around_the_clock_near_30s(world):
    summary, out, truth = world
    bots = set(pd.read_parquet(truth / "bots.parquet").user_id)
    assert summary.bots == len(bots) > 0
    le = _good(out, truth, LISTENING_EVENTS)
    le["hour"] = pd.to_datetime(le.played_at, utc=True).dt.hour
    b = le[le.user_id.isin(bots)]
    assert len(b) > 0
    assert b.ms_played.between(30_000, 34_500).all()
    assert not b.skipped.astype(bool).any() and not b.liked.astype(bool).any()
    assert not b.shared.astype(bool).any()
    per_day = (
        b.groupby(["user_id", "_dt"])
        .agg(n=("hour", "size"), hours=("hour", "nunique"), tracks=("track_id", "nunique"))
        .reset_index()
    )
    signup = _good(out, truth, USERS).drop_duplicates("user_id").set_index("user_id").signup_date
    full = per_day[per_day.user_id.map(signup) < per_day._dt]  # whole days after sign-up
    assert (full.n >= 300).all() and (full.n <= 800).all()
    assert len(full) > 0 and (full.hours >= 20).all() and (full.tracks <= 5).all()
    main_device = b.groupby("user_id").device_type.agg(
        lambda s: s.value_counts(normalize=True).iloc[0]
    )
    assert (main_device > 0.85).all()
    humans = le[~le.user_id.isin(bots)].groupby(["user_id", "_dt"]).size()
    assert humans.median() < 60


def test_churn_truth_matches_landing(long_world):
    summary, out, truth = long_world
    churn = pd.read_parquet(truth / "churn_events.parquet")
    se = _good(out, truth, SUBSCRIPTION_EVENTS)
    cancels = se[se.event_type == "cancel"]
    landing = {(int(u), d) for u, d in zip(cancels.user_id, cancels._dt, strict=True)}
    paid = churn[churn.kind == "paid_cancel"]
    assert {(int(u), d) for u, d in zip(paid.user_id, paid.churn_date, strict=True)} == landing
    assert (cancels.plan == "free").all()

    plays = _good(out, truth, LISTENING_EVENTS)
    played = set(zip(plays.user_id.astype(int), plays._dt, strict=True))
    last = summary.start + dt.timedelta(days=summary.days - 1)
    latent = churn[(churn.kind == "dormancy") & (churn.source == "latent")]
    assert len(latent) > 0
    for u, day in zip(latent.user_id, latent.churn_date, strict=True):
        horizon = min(last, day + dt.timedelta(days=29))
        span = (horizon - day).days + 1
        assert not any((u, day + dt.timedelta(days=i)) in played for i in range(span))
    rule = churn[(churn.kind == "dormancy") & (churn.source == "landing")]
    assert len(rule) > 0
    for u, day in zip(rule.user_id, rule.churn_date, strict=True):
        assert (u, day - dt.timedelta(days=1)) in played
        assert not any((u, day + dt.timedelta(days=i)) in played for i in range(30))
        assert ((latent.user_id == u) & (latent.churn_date >= day)).any()


def test_user_daily_truth_and_hazard_signal(long_world):
    _, out, truth = long_world
    ud = pd.read_parquet(truth / "user_daily.parquet")
    assert list(ud.columns) == [
        "user_id",
        "date",
        "hazard",
        "engagement",
        "plan",
        "is_paying",
        "is_bot",
        "dormant",
        "plays",
    ]
    assert ud.hazard.between(0, 1).all() and ud.plan.isin(PLANS).all()
    assert (ud.is_paying == (ud.plan != "free")).all()
    assert not ud.duplicated(["user_id", "date"]).any()
    live = ud[~ud.dormant & (ud.hazard > 0)]
    low, high = live.plays <= live.plays.quantile(0.2), live.plays >= live.plays.quantile(0.8)
    assert live[low].hazard.mean() > 2 * live[high].hazard.mean()
    plays = _good(out, truth, LISTENING_EVENTS)
    refs = pd.read_parquet(truth / "unknown_refs.parquet")
    assert ud.plays.sum() == len(plays) - len(refs)  # the unknown refs are extra copies


def test_track_genres_truth_and_audio(world):
    summary, out, truth = world
    tg = pd.read_parquet(truth / "track_genres.parquet")
    assert len(tg) == summary.tracks and tg.genre.isin(GENRES).all()
    assert 0.6 < tg.labelled.mean() < 0.9
    tracks = (
        _good(out, truth, TRACKS)
        .drop_duplicates("track_id")
        .merge(tg, on="track_id", suffixes=("", "_true"))
    )
    assert len(tracks) == summary.tracks
    assert (tracks.genre.isna() == ~tracks.labelled).all()
    known = tracks[tracks.labelled]
    assert (known.genre == known.genre_true).all()
    with_clip = tracks[tracks.preview_path.notna()]
    assert len(with_clip) == summary.audio_files == tg.has_preview.sum() > 0
    for rel in with_clip.preview_path:
        info = sf.info(str(out / rel))
        assert (info.samplerate, info.channels, info.subtype) == (8000, 1, "PCM_16")
        assert info.frames == round(0.5 * 8000)
    data, rate = sf.read(str(out / with_clip.preview_path.iloc[0]))
    assert rate == 8000 and np.abs(data).max() > 0.1


def test_truth_folder_is_separate_and_complete(world):
    summary, out, truth = world
    assert truth.is_dir() and not truth.is_relative_to(out)
    for name in ("user_daily", "churn_events", "bots", "track_genres", "bad_rows", "unknown_refs"):
        assert (truth / f"{name}.parquet").is_file()
    assert (truth / "summary.json").is_file()
    d = summary.to_dict()
    assert d["rows"] == summary.rows and d["start"] == START.isoformat()


def _digest(out: Path) -> dict[str, str]:
    return {
        p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(out.rglob("*"))
        if p.is_file()
    }


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    kw = {
        "users": 120,
        "tracks": 60,
        "days": 3,
        "bad_rate": 0.05,
        "clip_seconds": 0.25,
        "sample_rate": 8000,
    }
    a = _digest(_simulate(tmp_path / "a", seed=11, **kw)[1])
    b = _digest(_simulate(tmp_path / "b", seed=11, **kw)[1])
    c = _digest(_simulate(tmp_path / "c", seed=12, **kw)[1])
    assert a == b
    assert any(f.startswith("audio/") for f in a)
    common = set(a) & set(c)
    assert any(a[f] != c[f] for f in common if not f.endswith(SUCCESS_MARKER))


def test_rerun_into_same_folder_replaces_files(tmp_path):
    kw = {
        "users": 80,
        "tracks": 40,
        "days": 2,
        "seed": 1,
        "clip_seconds": 0.25,
        "sample_rate": 8000,
    }
    first = _digest(_simulate(tmp_path, **kw)[1])
    second = _digest(_simulate(tmp_path, **kw)[1])
    assert first == second


def test_large_days_are_split_into_several_files(tmp_path, monkeypatch):
    monkeypatch.setattr(sim_core, "MAX_ROWS_PER_FILE", 2000)
    summary, out, truth = _simulate(
        tmp_path, users=300, tracks=100, days=2, preview_share=0.0, bad_rate=0.05
    )
    for day in _days(summary):
        parts = sorted((out / LISTENING_EVENTS.name / f"dt={day}").glob("part-*"))
        assert len(parts) >= 2 and parts[1].name.startswith("part-001")
    le = _load(out, LISTENING_EVENTS).set_index(["_file", "_row"])
    bad = _bad(truth)
    rows = bad[bad.dataset == LISTENING_EVENTS.name]
    assert rows.file.nunique() > 2
    hit = le.loc[list(zip(rows.file, rows.row_number, strict=True)), "event_id"]
    assert list(hit) == list(rows.row_key)
    assert summary.rows[LISTENING_EVENTS.name] == len(le)


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"users": 0}, "users"),
        ({"days": 0}, "days"),
        ({"tracks": 0}, "tracks"),
        ({"bad_rate": 0.6}, "bad_rate"),
        ({"bad_rate": -0.1}, "bad_rate"),
        ({"preview_share": 1.5}, "preview_share"),
        ({"bot_share": 0.9}, "bot_share"),
        ({"seed": -1}, "seed"),
        ({"users": 2.5}, "users"),
        ({"start": "2026-01-01"}, "start"),
        ({"clip_seconds": 0}, "clip_seconds"),
    ],
)
def test_bad_arguments_are_refused(tmp_path, kw, message):
    args = {"users": 10, "tracks": 10, "start": START, "days": 1, "seed": 1}
    args.update(kw)
    with pytest.raises(ValueError, match=message):
        simulate_world(tmp_path / "landing", **args)


def test_truth_inside_landing_is_refused(tmp_path):
    with pytest.raises(ValueError, match="truth_out"):
        simulate_world(
            tmp_path / "landing",
            users=10,
            tracks=10,
            start=START,
            days=1,
            seed=1,
            truth_out=tmp_path / "landing" / "truth",
        )


def test_throughput_is_reported(tmp_path):
    """Prints events/s of a ~150k-event world (a report, not a timing assertion)."""
    t0 = time.perf_counter()
    summary, _, _ = _simulate(
        tmp_path, users=1500, tracks=500, days=8, preview_share=0.0, bad_rate=0.002, bot_share=0.01
    )
    elapsed = time.perf_counter() - t0
    events = summary.rows[LISTENING_EVENTS.name]
    print(
        f"\nsimulator throughput: {events} listening events in {elapsed:.2f} s "
        f"= {events / elapsed:,.0f} events/s; timings {summary.timings}"
    )
    assert events > 50_000


def test_burn_in_starts_the_landing_data_from_a_running_world(tmp_path):
    """The days before ``start`` are simulated and dropped: the first landing day is
    ``start`` and carries every account and every track released by then; the truth covers
    the landing days only, and the zero burn-in is the plain world."""
    summary, out, truth = _simulate(
        tmp_path / "burn", users=300, days=4, burn_in_days=40, bad_rate=0.0, preview_share=0.2
    )
    assert summary.burn_in_days == 40
    folders = sorted(p.name for p in (out / USERS.name).iterdir())
    assert folders == [f"dt={START + dt.timedelta(days=i)}" for i in range(4)]
    users = _good(out, truth, USERS)
    first = users[users._dt == START]
    signup = pd.to_datetime(first.signup_date).dt.date
    assert len(first) == first.user_id.nunique() > 250  # all accounts but the later sign-ups
    assert (signup < START - dt.timedelta(days=30)).any()  # some signed up during burn-in
    assert (signup <= START).all()
    ud = pd.read_parquet(truth / "user_daily.parquet")
    assert ud.date.min() == START and ud.date.max() == START + dt.timedelta(days=3)
    churn = pd.read_parquet(truth / "churn_events.parquet")
    assert churn.empty or churn.churn_date.min() >= START
    tg = pd.read_parquet(truth / "track_genres.parquet")
    tracks = _good(out, truth, TRACKS)
    released = set(tg.loc[tg.release_date <= START, "track_id"])
    assert set(tracks.loc[tracks._dt == START, "track_id"]) == released
    clips = {p.stem for p in (out / "audio").iterdir()}
    assert clips == set(
        tg.loc[tg.has_preview & (tg.release_date <= START + dt.timedelta(days=3)), "track_id"]
    )


@pytest.mark.slow
def test_burn_in_settles_the_paid_churn_hazard(tmp_path):
    """Without a burn-in, accounts start from a drawn state and the paid churn hazard
    swings over the first months (fading users have not faded yet); after a year of
    burn-in it stays within a narrow band."""

    def swing(burn_in: int) -> float:
        _, _, truth = _simulate(
            tmp_path / f"b{burn_in}",
            users=3000,
            tracks=300,
            days=180,
            burn_in_days=burn_in,
            bad_rate=0.0,
            bot_share=0.0,
            preview_share=0.0,
        )
        ud = pd.read_parquet(truth / "user_daily.parquet", columns=["date", "hazard", "is_paying"])
        paying = ud[ud.is_paying]
        month = (pd.to_datetime(paying.date) - pd.Timestamp(START)).dt.days // 30
        by_month = paying[month < 5].groupby(month[month < 5]).hazard.mean()
        return float(by_month.max() / by_month.min())

    # measured: 1.72 fresh (0.00104 .. 0.00179), 1.08 settled (0.00076 .. 0.00082)
    settled, fresh = swing(365), swing(0)
    assert fresh > 1.4
    assert settled < 1.25
