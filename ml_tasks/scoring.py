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
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import yaml
from psycopg import sql

from ml_tasks import contract, features, interventions, registry, warehouse
from ml_tasks.churn import explain
from ml_tasks.settings import get_settings
from ml_tasks.utc_days import day_end

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
    """No model of the family was champion at the time the day closed.

    ``recorded`` says the family already wrote its skip to ``scores.scoring_runs``."""

    def __init__(self, message: str, *, recorded: bool = False) -> None:
        super().__init__(message)
        self.recorded = recorded


class NotReady(RuntimeError):
    """The feature day to score is missing or did not pass validation."""


@dataclass(frozen=True)
class ScoringConfig:
    """Risk tiers, segment thresholds and tag rules (``config/churn_scoring.yaml``)."""

    tiers: tuple[tuple[str, float], ...]
    heavy_hours: float
    light_hours: float
    tags: dict[str, dict[str, float]]
    reasons_method: str = "path"

    @classmethod
    def load(cls, path: Path | None = None) -> ScoringConfig:
        path = path or get_settings().config_dir / "churn_scoring.yaml"
        doc = yaml.safe_load(path.read_text())
        tiers = sorted(doc["risk_tiers"].items(), key=lambda kv: -float(kv[1]))
        seg = doc["segments"]
        method = str((doc.get("reasons") or {}).get("method", "path"))
        if method not in explain.METHODS:
            raise ValueError(
                f"{path}: reasons.method must be one of {', '.join(explain.METHODS)},"
                f" got {method!r}"
            )
        return cls(
            tiers=tuple((name, float(v)) for name, v in tiers),
            heavy_hours=float(seg["heavy_hours_per_day"]),
            light_hours=float(seg["light_hours_per_day"]),
            tags={k: {c: float(t) for c, t in v.items()} for k, v in doc["tags"].items()},
            reasons_method=method,
        )


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
        return _id_ranges(conn, partition, chunk_users)


def _id_ranges(conn, relation: str, chunk_users: int) -> list[tuple[int, int]]:
    """Half-open ``user_id`` ranges of ``relation`` with about ``chunk_users`` rows each."""
    ids = conn.execute(
        sql.SQL(
            "SELECT user_id FROM (SELECT user_id, row_number() OVER (ORDER BY user_id) AS n"
            " FROM {}) s WHERE (n - 1) %% %s = 0 ORDER BY user_id"
        ).format(warehouse.qualified(relation)),
        (chunk_users,),
    ).fetchall()
    starts = [int(r[0]) for r in ids]
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
        frame = read_features(conn, partition, columns, lo, hi)
        rows = len(frame)
        if rows:
            values = frame[model.feature_names]
            probabilities = model.predict(values)
            top_columns, top_contrib = model.top_reasons(
                values, top=3, method=config.reasons_method
            )
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
                    "reasons": pa.array(
                        reasons_json(top_columns, top_contrib, values), pa.string()
                    ),
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


def read_features(conn, partition: str, columns: list[str], lo: int, hi: int) -> pd.DataFrame:
    """The ``columns`` of the users in ``[lo, hi)`` of a ``features.user_daily`` partition.

    Read as fixed-width binary (:func:`ml_tasks.warehouse.read_numbers`): numbers as
    ``float8`` with NULL as NaN (what pandas makes of a nullable column anyway), booleans
    as 0/1 (back to ``bool`` when none is NULL), ``plan`` as its index in the contract's
    plans. About 3x less server time than the CSV a generic read takes for ~60 columns.
    """
    with conn.cursor() as cur:
        cur.execute(
            sql.SQL("SELECT {} FROM {} LIMIT 0").format(
                sql.SQL(", ").join(map(sql.Identifier, columns)), warehouse.qualified(partition)
            )
        )
        types = {c.name: c.type_code for c in cur.description}
    select = []
    for name in columns:
        col = sql.Identifier(name)
        if name == "user_id":
            expr = col
        elif name == "plan":
            expr = sql.SQL("COALESCE(array_position({}::text[], {}), 0)::float8").format(
                sql.Literal(list(contract.PLANS)), col
            )
        elif types[name] == 16:  # bool
            expr = sql.SQL("COALESCE({}::int::float8, 'NaN')").format(col)
        elif types[name] in (20, 21, 23, 700, 701, 1700):
            expr = sql.SQL("COALESCE({}::float8, 'NaN')").format(col)
        else:
            raise TypeError(f"read_features: column {name} has an unexpected type {types[name]}")
        select.append(sql.SQL("{} AS {}").format(expr, col))
    arrays = warehouse.read_numbers(
        conn,
        sql.SQL("SELECT {} FROM {} WHERE user_id >= {} AND user_id < {} ORDER BY user_id").format(
            sql.SQL(", ").join(select),
            warehouse.qualified(partition),
            sql.Literal(int(lo)),
            sql.Literal(int(hi)),
        ),
        integers=("user_id",),
    )
    frame = pd.DataFrame(arrays, columns=columns)
    if "plan" in frame:
        codes = frame["plan"].to_numpy(dtype=np.int64)
        if (codes == 0).any():
            raise ValueError(f"{partition}: users with a plan the contract does not know")
        frame["plan"] = np.asarray(contract.PLANS, dtype=object)[codes - 1]
    for name in columns:
        if types[name] == 16 and not frame[name].isna().any():
            frame[name] = frame[name].astype(bool)
    return frame


def reasons_json(columns: np.ndarray, contributions: np.ndarray, values: pd.DataFrame) -> list[str]:
    """The reasons column: per row, ``[{feature, value, contribution}, ...]`` as JSON text.

    ``columns``/``contributions`` are :meth:`ChurnModel.top_reasons` (column indices into
    ``values``, -1 for none; a row's -1s come after its reasons). The text is assembled
    column-wise from pre-rendered pieces (numpy object arrays, one string operation per
    reason slot, not per row): each value is rendered once per (row, reason) straight from
    its column's numpy array, never through pandas cells, per-row dicts and ``json.dumps``.
    """
    rows, slots = columns.shape
    if rows == 0:
        return []
    rendered = np.full(columns.shape, "null", dtype=object)
    for j in np.unique(columns[columns >= 0]).tolist():
        at = np.nonzero(columns == j)
        rendered[at] = _json_values(values.iloc[:, j].to_numpy()[at[0]])
    names = np.array(
        [f'{{"feature": {json.dumps(str(name))}, "value": ' for name in values.columns] + [""],
        dtype=object,
    )
    rounded = np.round(contributions, 4)
    out = np.full(rows, "[", dtype=object)
    for k in range(slots):
        present = columns[:, k] >= 0
        if not present.any():
            break
        tails = [f', "contribution": {v!r}}}' for v in rounded[present, k].tolist()]
        piece = names[columns[present, k]] + rendered[present, k] + np.array(tails, dtype=object)
        out[present] += (", " + piece) if k else piece
    return (out + "]").tolist()


def _json_values(cells: np.ndarray) -> list[str]:
    """Feature values as JSON text: integral numbers as ints, others rounded to 4 places,
    missing and non-finite as null, booleans as true/false, anything else as a string.

    (A chunk's integer column reads as float when it holds nulls: rendering integral floats
    as ints keeps a value's text the same whichever chunk it was scored in.)
    """
    if cells.dtype == bool:
        return np.where(cells, "true", "false").tolist()
    if cells.dtype.kind in "iu":
        return [str(v) for v in cells.tolist()]
    if cells.dtype.kind == "f":
        x = cells.astype(np.float64)
        out = np.full(len(x), "null", dtype=object)
        finite = np.isfinite(x)
        integral = finite & (x == np.trunc(x)) & (np.abs(x) < 2**53)
        out[integral] = [str(v) for v in x[integral].astype(np.int64).tolist()]
        fractional = finite & ~integral
        out[fractional] = [repr(v) for v in np.round(x[fractional], 4).tolist()]
        return out.tolist()
    out = []
    for v in cells.tolist():
        if v is None or v is pd.NA or (isinstance(v, float) and not np.isfinite(v)):
            out.append("null")
        elif isinstance(v, bool):
            out.append("true" if v else "false")
        elif isinstance(v, int | float):
            out.extend(_json_values(np.asarray([v], dtype=float)))
        else:
            out.append(json.dumps(str(v)))
    return out


def commit_churn(
    day: date,
    *,
    run_id: str,
    dsn: str | None = None,
    expected_rows: int | None = None,
    chunk_users: int | None = None,
) -> dict:
    """Plan the day's interventions and swap both days in, in one transaction.

    Memory stays flat in the number of users: a first pass over the staged scores, chunk
    by chunk, keeps only each user's best net value and its cost (16 bytes a user) for the
    day's greedy budget allocation; a second pass writes the plan's rows chunk by chunk.
    """
    target = warehouse.resolve_dsn(dsn=dsn)
    catalogue = interventions.load_catalogue()
    costs = catalogue.costs
    stage = _stage(CHURN_TABLE, day)
    started = time.perf_counter()
    with warehouse.connect(target) as conn:
        if conn.execute("SELECT to_regclass(%s)", (stage,)).fetchone()[0] is None:
            raise NotReady(f"nothing staged for {day}: score its chunks first")
        staged, n_versions, version = conn.execute(
            sql.SQL(
                "SELECT count(*), count(DISTINCT model_version), min(model_version) FROM {}"
            ).format(warehouse.qualified(stage))
        ).fetchone()
        features_rows = conn.execute(
            sql.SQL("SELECT count(*) FROM {}").format(
                warehouse.qualified(warehouse.partition_name("features.user_daily", day))
            )
        ).fetchone()[0]
        if staged != features_rows or (expected_rows is not None and staged != expected_rows):
            raise RuntimeError(
                f"staged churn scores for {day} hold {staged} users, the feature day"
                f" {features_rows}: a chunk is missing; re-run the scoring chunks"
            )
        if n_versions > 1:
            versions = conn.execute(
                sql.SQL("SELECT DISTINCT model_version FROM {}").format(warehouse.qualified(stage))
            ).fetchall()
            raise RuntimeError(
                f"staged scores for {day} mix model versions {sorted(v for (v,) in versions)}"
            )
        ranges = _id_ranges(conn, stage, chunk_users or get_settings().score_chunk_users)

        def staged_users(lo: int, hi: int) -> pd.DataFrame:
            return read_staged_users(conn, stage, lo, hi)

        # pass 1: the day's allocation, on narrow arrays
        best_net, best_cost = [], []
        for lo, hi in ranges:
            opts = interventions.options(staged_users(lo, hi), catalogue)
            best_net.append(opts.best_net)
            best_cost.append(costs[opts.best])
        selected, rank = interventions.allocate_budget(
            np.concatenate(best_net or [np.zeros(0)]),
            np.concatenate(best_cost or [np.zeros(0)]),
            catalogue.daily_budget,
        )
        del best_net, best_cost
        now = datetime.now(UTC)
        chosen = spent = 0.0
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (warehouse.lock_key(stage),))
            iv_stage = _stage(INTERVENTIONS_TABLE, day)
            warehouse.create_day_stage(conn, INTERVENTIONS_TABLE, iv_stage, "dt", day)
            # pass 2: the plan's rows, chunk by chunk
            offset = 0
            for lo, hi in ranges:
                users = staged_users(lo, hi)
                n = len(users)
                plan = interventions.plan_rows(
                    users, catalogue, selected[offset : offset + n], rank[offset : offset + n]
                )
                offset += n
                chosen += int(plan["selected"].sum())
                spent += float(plan.loc[plan["selected"], "cost"].sum())
                planned = _intervention_rows(day, plan, users, version, catalogue, run_id, now)
                warehouse.copy_arrow(conn, iv_stage, planned, planned.column_names)
            if offset != staged:
                raise RuntimeError(f"planned {offset} of {staged} staged users for {day}")
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
                    version,
                    f"{staged} users scored; {int(chosen)} interventions in budget",
                    staged,
                    time.perf_counter() - started,
                ),
            )
    log.info(
        "interventions for %s: %d of %d users with a positive one, %d selected for $%.2f of $%.2f",
        day,
        int((rank > 0).sum()),
        staged,
        int(chosen),
        spent,
        catalogue.daily_budget,
    )
    return {
        "day": day.isoformat(),
        "users": staged,
        "model_version": version,
        "interventions_selected": int(chosen),
        "budget_spent": spent,
    }


def read_staged_users(conn, stage: str, lo: int, hi: int) -> pd.DataFrame:
    """``user_id``, ``p_churn`` (30 days), ``plan``, ``is_paying`` and ``segment`` of the
    staged users in ``[lo, hi)``, by user id.

    Read as fixed-width binary (:func:`ml_tasks.warehouse.read_numbers`), the plan and the
    segment as their positions in the contract's plans and the segments, mapped back here:
    the interventions' two passes read every staged user twice.
    """
    plans = np.asarray(contract.PLANS, dtype=object)
    segments = np.asarray(interventions.SEGMENTS, dtype=object)
    arrays = warehouse.read_numbers(
        conn,
        sql.SQL(
            "SELECT user_id, p_churn_30d::float8 AS p_churn,"
            " coalesce(array_position({plans}::text[], plan), 0)::float8 AS plan,"
            " is_paying::int::float8 AS is_paying,"
            " coalesce(array_position({segments}::text[], segment), 0)::float8 AS segment"
            " FROM {stage} WHERE user_id >= {lo} AND user_id < {hi} ORDER BY user_id"
        ).format(
            plans=sql.Literal(list(contract.PLANS)),
            segments=sql.Literal(list(interventions.SEGMENTS)),
            stage=warehouse.qualified(stage),
            lo=sql.Literal(int(lo)),
            hi=sql.Literal(int(hi)),
        ),
        integers=("user_id",),
    )
    plan = arrays["plan"].astype(np.int64)
    segment = arrays["segment"].astype(np.int64)
    if (plan == 0).any() or (segment == 0).any():
        raise ValueError(f"{stage}: staged users with a plan or segment Encore does not know")
    return pd.DataFrame(
        {
            "user_id": arrays["user_id"],
            "p_churn": arrays["p_churn"],
            "plan": plans[plan - 1],
            "is_paying": arrays["is_paying"].astype(bool),
            "segment": segments[segment - 1],
        }
    )


def _intervention_rows(day, plan, users, version, catalogue, run_id, now) -> pa.Table:
    """``scores.interventions`` rows of one chunk of the plan."""
    n = len(plan)
    return pa.table(
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
            "segment": pa.array(users["segment"]),
            "plan": pa.array(users["plan"]),
            "model_version": pa.array([version] * n, pa.string()),
            "catalogue_version": pa.array([catalogue.version] * n),
            "run_id": pa.array([run_id] * n),
            "scored_at": pa.array([now] * n, pa.timestamp("us", tz="UTC")),
        }
    )


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
    # One scoring of a day at a time: a second run of the same day waits for the first
    # to commit, then scores the whole day again, instead of dropping its stage midway.
    with (
        warehouse.connect(target, autocommit=True) as lock_conn,
        warehouse.session_lock(lock_conn, f"score:{CHURN_MODEL}:{day.isoformat()}"),
    ):
        prepare_stage(day, dsn=target)
        total = 0
        chunk = chunk_users or get_settings().score_chunk_users
        for lo, hi in user_id_chunks(target, day, chunk):
            total += score_churn_chunk(
                day, lo, hi, run_id=run_id, dsn=target, model=model, record=record, config=config
            )
        result = commit_churn(
            day, run_id=run_id, dsn=target, expected_rows=total, chunk_users=chunk_users
        )
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


def score_genres(day: date, **kwargs) -> dict:
    """Genres of the unlabelled catalogue for ``day`` (see :func:`ml_tasks.genre.score_genres`,
    which records a skip itself); raises :class:`NoChampion` without a genre champion."""
    from ml_tasks.genre import score_genres as score

    result = score(day, **kwargs)
    if result["status"] == "skipped":
        raise NoChampion(result["reason"], recorded=True)
    return result


#: Model families ``encore score`` knows, in the order it scores them.
FAMILIES = {CHURN_MODEL: score_churn, "popularity": score_popularity, "genre": score_genres}


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
            if not exc.recorded:
                record_skip(target, day, run_id, name, str(exc))
            log.warning("skipped %s for %s: %s", name, day, exc)
    return out
