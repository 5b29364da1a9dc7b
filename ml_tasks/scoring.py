"""Score one day (the ``score_daily`` DAG and ``encore score``).

Churn: every user active on day D (the rows of ``features.user_daily`` for D) gets
P(churn) at 7, 30 and 90 days from the model that was champion when D closed, a risk
tier, a segment and tags, the top three reasons behind the score, and an intervention
recommendation under the day's budget.

The day is scored in chunks of user ids, so memory does not grow with the number of users
and chunks can run in parallel (Airflow dynamic task mapping): each chunk COPYs its rows
into the day's stage table, replacing any earlier attempt of the same chunk; the commit
step plans interventions over the whole day and swaps both partitions in one transaction.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import yaml
from psycopg import sql

from ml_tasks import features, interventions, registry, warehouse
from ml_tasks.settings import get_settings

log = logging.getLogger(__name__)

CHURN_MODEL = "churn"
CHURN_TABLE = "scores.churn"
INTERVENTIONS_TABLE = "scores.interventions"
HORIZONS = (7, 30, 90)
#: Columns every churn scoring frame needs beside the model's features.
CONTEXT_COLUMNS = (
    "user_id",
    "plan",
    "is_paying",
    "listening_hours_30d",
    "discovery_share_30d",
    "ctx_search_share_30d",
    "ctx_recommendation_share_30d",
    "ctx_playlist_share_30d",
    "share_rate_30d",
)


class NoChampion(RuntimeError):
    """No model of the family was champion at the time the day closed."""


class NotReady(RuntimeError):
    """The feature day to score is missing or did not pass validation."""


@dataclass(frozen=True)
class ScoringConfig:
    """Risk tiers, segment thresholds and tag rules (``config/churn_scoring.yaml``)."""

    tiers: tuple[tuple[str, float], ...]
    heavy_hours: float
    light_hours: float
    tags: dict[str, dict[str, float]]

    @classmethod
    def load(cls, path: Path | None = None) -> ScoringConfig:
        path = path or get_settings().config_dir / "churn_scoring.yaml"
        doc = yaml.safe_load(path.read_text())
        tiers = sorted(doc["risk_tiers"].items(), key=lambda kv: -float(kv[1]))
        seg = doc["segments"]
        return cls(
            tiers=tuple((name, float(v)) for name, v in tiers),
            heavy_hours=float(seg["heavy_hours_per_day"]),
            light_hours=float(seg["light_hours_per_day"]),
            tags={k: {c: float(t) for c, t in v.items()} for k, v in doc["tags"].items()},
        )


def day_end(day: date) -> datetime:
    """The instant day ``day`` closed (D+1 00:00 UTC): the model and features as of then."""
    return datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1)


def segments(frame: pd.DataFrame, config: ScoringConfig) -> np.ndarray:
    """heavy / moderate / light from the average hours a day over 30 days."""
    per_day = frame["listening_hours_30d"].to_numpy(dtype=float) / 30.0
    return np.where(
        per_day > config.heavy_hours,
        "heavy",
        np.where(per_day < config.light_hours, "light", "moderate"),
    )


def tags(frame: pd.DataFrame, config: ScoringConfig) -> list[list[str]]:
    """Behavioural tags per row (a user may have several, or none)."""
    masks = list(_tag_masks(frame, config).items())
    return [[tag for tag, mask in masks if mask[i]] for i in range(len(frame))]


def tag_literals(frame: pd.DataFrame, config: ScoringConfig) -> pa.Array:
    """:func:`tags` as PostgreSQL ``text[]`` literals (``{"a","b"}``), one per row.

    Vectorised: each row's set of tags is a bit code, and only the distinct codes (at most
    2^tags) are turned into lists and literals, by the same
    :func:`ml_tasks.warehouse._array_literals` ``copy_arrow`` would apply row by row.
    """
    names = list(config.tags)
    codes = np.zeros(len(frame), dtype=np.int64)
    if len(frame):
        masks = _tag_masks(frame, config)
        for k, name in enumerate(names):
            codes |= masks[name].astype(np.int64) << k
    distinct, index = np.unique(codes, return_inverse=True)
    combos = [[name for k, name in enumerate(names) if int(code) >> k & 1] for code in distinct]
    literals = warehouse._array_literals(pa.array(combos, pa.list_(pa.string())))
    return literals.take(pa.array(index.reshape(-1).astype(np.int64)))


def _tag_masks(frame: pd.DataFrame, config: ScoringConfig) -> dict[str, np.ndarray]:
    values = {
        "search_or_recommendation_share_30d": frame["ctx_search_share_30d"].fillna(0)
        + frame["ctx_recommendation_share_30d"].fillna(0)
    }
    masks = {}
    for tag, rules in config.tags.items():
        mask = np.ones(len(frame), dtype=bool)
        for column, threshold in rules.items():
            series = values.get(column)
            if series is None:
                series = frame[column].fillna(0)
            mask &= series.to_numpy(dtype=float) >= threshold
        masks[tag] = mask
    return masks


def risk_tiers(p30: np.ndarray, config: ScoringConfig) -> np.ndarray:
    """The highest tier whose threshold P(churn within 30 days) reaches."""
    out = np.full(len(p30), config.tiers[-1][0], dtype=object)
    for name, threshold in reversed(config.tiers):
        out[p30 >= threshold] = name
    return out


# --------------------------------------------------------------------------- reading


def user_id_chunks(dsn: str, day: date, chunk_users: int) -> list[tuple[int, int]]:
    """Half-open user-id ranges ``[lo, hi)`` of about ``chunk_users`` users of day ``day``."""
    partition = warehouse.partition_name("features.user_daily", day)
    with warehouse.connect(dsn) as conn:
        if conn.execute("SELECT to_regclass(%s)", (partition,)).fetchone()[0] is None:
            raise NotReady(f"no features for {day}: run encore features --date {day} first")
        ids = conn.execute(
            sql.SQL(
                "SELECT user_id FROM (SELECT user_id, row_number() OVER (ORDER BY user_id) AS n"
                " FROM {}) s WHERE (n - 1) %% %s = 0 ORDER BY user_id"
            ).format(warehouse.qualified(partition)),
            (chunk_users,),
        ).fetchall()
    starts = [int(r[0]) for r in ids]
    if not starts:
        return []
    return [
        (lo, starts[i + 1] if i + 1 < len(starts) else np.iinfo(np.int64).max)
        for i, lo in enumerate(starts)
    ]


def features_ready(dsn: str, day: date) -> None:
    """Refuse a feature day that has not passed validation after its latest build."""
    ready, why = features.feature_day_ready(day, dsn=dsn)
    if not ready:
        raise NotReady(f"cannot score {day}: {why}")


# --------------------------------------------------------------------------- churn


def _stage(table: str, day: date) -> str:
    return f"{warehouse.partition_name(table, day)}_stage"


def _ensure_stage(conn, table: str, day: date) -> str:
    stage = _stage(table, day)
    if conn.execute("SELECT to_regclass(%s)", (stage,)).fetchone()[0] is None:
        warehouse.create_day_stage(conn, table, stage, "dt", day)
    return stage


def score_churn_chunk(
    day: date,
    lo: int,
    hi: int,
    *,
    run_id: str,
    dsn: str | None = None,
    model=None,
    record=None,
    config: ScoringConfig | None = None,
) -> int:
    """Score the users of ``day`` with ids in ``[lo, hi)`` into the day's stage table."""
    target = warehouse.resolve_dsn(dsn=dsn)
    if record is None:
        record = registry.champion(CHURN_MODEL, day_end(day), dsn=target)
        if record is None:
            raise NoChampion(f"no churn model was champion when {day} closed")
    model = model or registry.load_churn_model(record)
    config = config or ScoringConfig.load()
    columns = list(dict.fromkeys([*CONTEXT_COLUMNS, *model.feature_names]))
    partition = warehouse.partition_name("features.user_daily", day)
    started = time.perf_counter()
    with warehouse.connect(target) as conn:
        table = warehouse.read_arrow(
            conn,
            sql.SQL("SELECT {} FROM {} WHERE user_id >= %s AND user_id < %s").format(
                sql.SQL(", ").join(map(sql.Identifier, columns)), warehouse.qualified(partition)
            ),
            (lo, hi),
        )
        frame = table.to_pandas() if table.num_columns else pd.DataFrame(columns=columns)
        rows = len(frame)
        if rows:
            values = frame[model.feature_names]
            probabilities = model.predict(values)
            reasons = model.reasons(values, top=3)
            p = probabilities[[f"p_churn_{h}d" for h in HORIZONS]].to_numpy(dtype=float)
            out = pa.table(
                {
                    "dt": pa.array([day] * rows, pa.date32()),
                    "user_id": pa.array(frame["user_id"].to_numpy(dtype=np.int64)),
                    "p_churn_7d": pa.array(p[:, 0]),
                    "p_churn_30d": pa.array(p[:, 1]),
                    "p_churn_90d": pa.array(p[:, 2]),
                    "risk_tier": pa.array(risk_tiers(p[:, 1], config).astype(str)),
                    "segment": pa.array(segments(frame, config).astype(str)),
                    # text[] literals, as copy_arrow would render a list<string> column
                    "tags": tag_literals(frame, config),
                    "plan": pa.array(frame["plan"].astype(str)),
                    "is_paying": pa.array(frame["is_paying"].astype(bool)),
                    "reasons": pa.array(reasons_json(reasons, values), pa.string()),
                    "model_name": pa.array([record.name] * rows),
                    "model_version": pa.array([record.version] * rows),
                    "feature_date": pa.array([day] * rows, pa.date32()),
                    "run_id": pa.array([run_id] * rows),
                    "scored_at": pa.array([datetime.now(UTC)] * rows, pa.timestamp("us", tz="UTC")),
                }
            )
        with conn.transaction():
            stage = _ensure_stage(conn, CHURN_TABLE, day)
            conn.execute(
                sql.SQL("DELETE FROM {} WHERE user_id >= %s AND user_id < %s").format(
                    warehouse.qualified(stage)
                ),
                (lo, hi),
            )
            if rows:
                warehouse.copy_arrow(conn, stage, out, out.column_names)
    log.info(
        "scored churn for %d users of %s in [%d, %d) in %.2f s",
        rows,
        day,
        lo,
        hi,
        time.perf_counter() - started,
    )
    return rows


def reasons_json(reasons: list[list[tuple[str, float]]], values: pd.DataFrame) -> list[str]:
    """The reasons column: per row, ``[{feature, value, contribution}, ...]`` as JSON text.

    A reason's value is gathered column by column (one numpy take and ``tolist`` per
    feature) rather than cell by cell through pandas, which cost ~20 us a cell; ``tolist``
    yields the same Python scalars ``_jsonable`` made of numpy ones, so the text is the same.
    """
    position = {name: j for j, name in enumerate(values.columns)}
    row_of, col_of = [], []
    for i, row in enumerate(reasons):
        for name, _ in row:
            row_of.append(i)
            col_of.append(position[name])
    rows = np.asarray(row_of, dtype=np.int64)
    cols = np.asarray(col_of, dtype=np.int64)
    gathered: list = [None] * len(rows)
    for j in np.unique(cols):
        at = np.flatnonzero(cols == j)
        picked = values.iloc[:, int(j)].to_numpy()[rows[at]].tolist()
        for k, value in zip(at.tolist(), picked, strict=True):
            gathered[k] = _jsonable(value)
    out = []
    k = 0
    for row in reasons:
        items = []
        for name, c in row:
            items.append(
                {"feature": name, "value": gathered[k], "contribution": round(float(c), 4)}
            )
            k += 1
        out.append(json.dumps(items))
    return out


def _jsonable(value):
    """A feature value for the reasons JSON: integral numbers as ints, others rounded.

    (A chunk's integer column reads as float when it holds nulls: this keeps a value's text
    the same whichever chunk it was scored in.)
    """
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return int(value) if value.is_integer() else round(value, 4)
    return value


def commit_churn(
    day: date, *, run_id: str, dsn: str | None = None, expected_rows: int | None = None
) -> dict:
    """Plan the day's interventions and swap both days in, in one transaction."""
    target = warehouse.resolve_dsn(dsn=dsn)
    catalogue = interventions.load_catalogue()
    stage = _stage(CHURN_TABLE, day)
    started = time.perf_counter()
    with warehouse.connect(target) as conn:
        if conn.execute("SELECT to_regclass(%s)", (stage,)).fetchone()[0] is None:
            raise NotReady(f"nothing staged for {day}: score its chunks first")
        scored = warehouse.read_arrow(
            conn,
            sql.SQL(
                "SELECT user_id, p_churn_30d AS p_churn, plan, is_paying, segment, model_version"
                " FROM {}"
            ).format(warehouse.qualified(stage)),
        ).to_pandas()
        features_rows = conn.execute(
            sql.SQL("SELECT count(*) FROM {}").format(
                warehouse.qualified(warehouse.partition_name("features.user_daily", day))
            )
        ).fetchone()[0]
        if len(scored) != features_rows or (
            expected_rows is not None and len(scored) != expected_rows
        ):
            raise RuntimeError(
                f"staged churn scores for {day} hold {len(scored)} users, the feature day"
                f" {features_rows}: a chunk is missing; re-run the scoring chunks"
            )
        versions = scored["model_version"].unique()
        if len(versions) > 1:
            raise RuntimeError(f"staged scores for {day} mix model versions {list(versions)}")
        plan = interventions.plan_interventions(scored, catalogue)
        now = datetime.now(UTC)
        n = len(plan)
        planned = pa.table(
            {
                "dt": pa.array([day] * n, pa.date32()),
                "user_id": pa.array(plan["user_id"].to_numpy(dtype=np.int64)),
                "intervention": pa.array(plan["intervention"], pa.string()),
                "selected": pa.array(plan["selected"].to_numpy(dtype=bool)),
                "budget_rank": pa.array(plan["budget_rank"], pa.int32()),
                "p_churn": pa.array(plan["p_churn"].to_numpy(dtype=float)),
                "value_at_risk": pa.array(plan["value_at_risk"].to_numpy(dtype=float)),
                "uplift": pa.array(plan["uplift"].to_numpy(dtype=float), from_pandas=True),
                "cost": pa.array(plan["cost"].to_numpy(dtype=float), from_pandas=True),
                "expected_net_value": pa.array(
                    plan["expected_net_value"].to_numpy(dtype=float), from_pandas=True
                ),
                "reason": pa.array(plan["reason"]),
                "segment": pa.array(scored["segment"]),
                "plan": pa.array(scored["plan"]),
                "model_version": pa.array(scored["model_version"]),
                "catalogue_version": pa.array([catalogue.version] * n),
                "run_id": pa.array([run_id] * n),
                "scored_at": pa.array([now] * n, pa.timestamp("us", tz="UTC")),
            }
        )
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (warehouse.lock_key(stage),))
            iv_stage = _stage(INTERVENTIONS_TABLE, day)
            warehouse.create_day_stage(conn, INTERVENTIONS_TABLE, iv_stage, "dt", day)
            warehouse.copy_arrow(conn, iv_stage, planned, planned.column_names)
            warehouse.swap_day_partition(conn, CHURN_TABLE, stage, day)
            warehouse.swap_day_partition(conn, INTERVENTIONS_TABLE, iv_stage, day)
            conn.execute(
                "INSERT INTO scores.scoring_runs (run_id, dt, model_name, model_version, status,"
                " detail, rows, seconds, finished_at) VALUES (%s, %s, %s, %s, 'scored', %s, %s,"
                " %s, now()) ON CONFLICT (run_id, dt, model_name) DO UPDATE SET"
                " model_version = excluded.model_version, status = excluded.status,"
                " detail = excluded.detail, rows = excluded.rows, seconds = excluded.seconds,"
                " finished_at = excluded.finished_at",
                (
                    run_id,
                    day,
                    CHURN_MODEL,
                    str(versions[0]) if len(versions) else None,
                    f"{n} users scored; {int(plan['selected'].sum())} interventions in budget",
                    n,
                    time.perf_counter() - started,
                ),
            )
    return {
        "day": day.isoformat(),
        "users": n,
        "model_version": str(versions[0]) if len(versions) else None,
        "interventions_selected": int(plan["selected"].sum()),
        "budget_spent": float(plan.loc[plan["selected"], "cost"].sum()),
    }


def prepare_stage(day: date, *, dsn: str | None = None) -> str:
    """Create an empty stage table for the day's churn scores (dropping an earlier one)."""
    stage = _stage(CHURN_TABLE, day)
    with warehouse.connect(warehouse.resolve_dsn(dsn=dsn)) as conn, conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (warehouse.lock_key(stage),))
        warehouse.create_day_stage(conn, CHURN_TABLE, stage, "dt", day)
    return stage


def score_churn(
    day: date, *, run_id: str, dsn: str | None = None, chunk_users: int | None = None
) -> dict:
    """Score churn for every active user of ``day``, chunk by chunk, then commit the day."""
    started = time.perf_counter()
    target = warehouse.ensure_migrated(dsn)
    features_ready(target, day)
    record = registry.champion(CHURN_MODEL, day_end(day), dsn=target)
    if record is None:
        raise NoChampion(f"no churn model was champion when {day} closed")
    model = registry.load_churn_model(record)
    config = ScoringConfig.load()
    prepare_stage(day, dsn=target)
    total = 0
    for lo, hi in user_id_chunks(target, day, chunk_users or get_settings().score_chunk_users):
        total += score_churn_chunk(
            day, lo, hi, run_id=run_id, dsn=target, model=model, record=record, config=config
        )
    result = commit_churn(day, run_id=run_id, dsn=target, expected_rows=total)
    result["seconds"] = round(time.perf_counter() - started, 2)
    return result


def record_skip(dsn: str, day: date, run_id: str, model_name: str, why: str) -> None:
    """Note in scores.scoring_runs that a model family was not scored for the day."""
    with warehouse.connect(dsn) as conn:
        conn.execute(
            "INSERT INTO scores.scoring_runs (run_id, dt, model_name, model_version, status,"
            " detail, rows, seconds, finished_at) VALUES (%s, %s, %s, NULL, 'skipped', %s, 0, 0,"
            " now()) ON CONFLICT (run_id, dt, model_name) DO UPDATE SET status = 'skipped',"
            " detail = excluded.detail, finished_at = excluded.finished_at",
            (run_id, day, model_name, why),
        )


def score_popularity(day: date, **kwargs) -> dict:
    """Track popularity forecasts for ``day`` (see :mod:`ml_tasks.popularity`)."""
    from ml_tasks.popularity import score_popularity as score

    return score(day, **kwargs)


#: Model families ``encore score`` knows, in the order it scores them.
FAMILIES = {CHURN_MODEL: score_churn, "popularity": score_popularity}


def score_day(
    day: date, *, run_id: str, dsn: str | None = None, families: list[str] | None = None
) -> dict:
    """Score every family that has a champion; say which were skipped and why."""
    target = warehouse.ensure_migrated(dsn)
    out: dict = {"day": day.isoformat(), "scored": {}, "skipped": {}}
    for name in families or list(FAMILIES):
        if name not in FAMILIES:
            raise ValueError(f"unknown model family {name!r}; known: {', '.join(FAMILIES)}")
        try:
            out["scored"][name] = FAMILIES[name](day, run_id=run_id, dsn=target)
        except NoChampion as exc:
            out["skipped"][name] = str(exc)
            record_skip(target, day, run_id, name, str(exc))
            log.warning("skipped %s for %s: %s", name, day, exc)
    return out
