"""Daily monitoring (``monitor_daily`` and ``encore monitor --date D``).

For day D:

- **fraud flags**: the day's stream anomalies as ``features_daily`` stored them, computed
  only when missing or out of date (:func:`ml_tasks.fraud.ensure_day`);
- **drift**: every input of the churn champion of D, and its 30-day score, against the
  model's training window: population stability index over 10 quantile bins of the
  reference, flagged ``warn``/``alert`` at the thresholds of ``config/monitoring.yaml``.
  The reference (a fixed hash sample of the window's feature rows and the model's score on
  them) is drawn once per model version and kept beside its artifact; the day's score is
  the one ``score_daily`` wrote, when the same model wrote it;
- **realized performance**: the churn scores made H days before D (H = 7, 30, 90) against
  the labels known as of D (AUC, Brier, calibration), once there are any;
- **the report**: an HTML page with the figures and a drift chart under
  ``$ENCORE_ARTIFACTS/reports/``, recorded in ``monitoring.reports``.

Each table's rows for the day are replaced in one transaction, so a re-run leaves the same
state.
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from psycopg import sql

from ml_tasks import fraud, registry, warehouse
from ml_tasks.settings import get_settings
from ml_tasks.yaml_config import load_flat

if TYPE_CHECKING:
    from ml_tasks.churn.model import ChurnModel

log = logging.getLogger(__name__)

HORIZONS = (7, 30, 90)


@dataclass(frozen=True)
class MonitoringConfig:
    """Drift thresholds and reference size (``config/monitoring.yaml``)."""

    psi_warn: float = 0.10
    psi_alert: float = 0.25
    bins: int = 10
    reference_rows: int = 50_000

    @classmethod
    def load(cls, path: Path | None = None) -> MonitoringConfig:
        config = load_flat(cls, "monitoring.yaml", path)
        if not 0 < config.psi_warn < config.psi_alert:
            raise ValueError("monitoring.yaml: need 0 < psi_warn < psi_alert")
        return config

    def status(self, psi: float) -> str:
        return "alert" if psi >= self.psi_alert else "warn" if psi >= self.psi_warn else "ok"


def psi(reference: np.ndarray, current: np.ndarray, bins: int = 10) -> float:
    """Population stability index of ``current`` against ``reference``.

    Bins are the reference's quantiles (ties merged); missing values are a bin of their
    own; empty bins get a small floor so the index stays finite.
    """
    reference = np.asarray(reference, dtype=float)
    current = np.asarray(current, dtype=float)
    ref_nan, cur_nan = np.isnan(reference), np.isnan(current)
    ref, cur = reference[~ref_nan], current[~cur_nan]
    edges = np.unique(np.quantile(ref, np.linspace(0, 1, bins + 1))) if len(ref) else []
    inner = edges[1:-1] if len(edges) > 2 else np.array([])
    ref_counts = np.append(
        np.bincount(np.searchsorted(inner, ref, side="right"), minlength=len(inner) + 1),
        ref_nan.sum(),
    )
    cur_counts = np.append(
        np.bincount(np.searchsorted(inner, cur, side="right"), minlength=len(inner) + 1),
        cur_nan.sum(),
    )
    p = np.maximum(ref_counts / max(ref_counts.sum(), 1), 1e-4)
    q = np.maximum(cur_counts / max(cur_counts.sum(), 1), 1e-4)
    return float(np.sum((q - p) * np.log(q / p)))


def _features(dsn: str, dates: list[date], columns: list[str], limit: int | None) -> pd.DataFrame:
    # partitioned on feature_ts (the last microsecond of dt): the range prunes the others
    query = sql.SQL(
        "SELECT {} FROM features.user_daily WHERE dt = ANY({})"
        " AND feature_ts >= {} AND feature_ts < {}{}"
    ).format(
        sql.SQL(", ").join(map(sql.Identifier, columns)),
        sql.Literal(dates),
        sql.Literal(warehouse.day_bounds(min(dates))[0]),
        sql.Literal(warehouse.day_bounds(max(dates))[1]),
        sql.SQL(f" ORDER BY hashtext(user_id::text || dt::text) LIMIT {int(limit)}")
        if limit
        else sql.SQL(""),
    )
    with warehouse.connect(dsn) as conn:
        return warehouse.read_arrow(conn, query).to_pandas()


SCORE_COLUMN = "score:p_churn_30d"


def reference_sample(
    record: registry.ModelRecord, model: ChurnModel, *, dsn: str, config: MonitoringConfig
) -> pd.DataFrame:
    """The drift reference of a churn model: up to ``reference_rows`` feature rows of its
    training window (a fixed hash sample) with the model's 30-day score on them.

    Drawn once per model version and cached beside its artifact
    (``monitoring_reference_<rows>.parquet``, written atomically): sampling the window sorts
    every row of it, and the model's score never changes.
    """
    path = record.artifact_path.parent / f"monitoring_reference_{config.reference_rows}.parquet"
    if path.is_file():
        return pd.read_parquet(path)
    start, end = record.train_start, record.train_end
    reference_days = [start + timedelta(days=i) for i in range((end - start).days + 1)]
    reference = _features(dsn, reference_days, list(model.feature_names), config.reference_rows)
    if reference.empty:
        return reference
    reference[SCORE_COLUMN] = model.predict(reference)["p_churn_30d"].to_numpy()
    tmp = path.with_suffix(f".{time.time_ns()}.tmp")
    reference.to_parquet(tmp, index=False)
    tmp.replace(path)
    log.info("drift reference of churn %s: %d rows cached", record.version, len(reference))
    return reference


def _day_scores(dsn: str, day: date, version: str, rows: int) -> np.ndarray | None:
    """The 30-day scores ``score_daily`` wrote for ``day`` with model ``version``, if it
    scored all ``rows`` of the day's features with it; else None."""
    with warehouse.connect(dsn) as conn:
        found = warehouse.read_arrow(
            conn,
            sql.SQL(
                "SELECT p_churn_30d FROM scores.churn WHERE dt = {d} AND model_version = {v}"
            ).format(d=sql.Literal(day), v=sql.Literal(version)),
        )
    if found.num_rows != rows:
        return None
    return found.column(0).to_numpy(zero_copy_only=False).astype(float)


def drift(day: date, *, dsn: str, config: MonitoringConfig) -> list[dict]:
    """PSI of each input of the churn champion of ``day``, and of its 30-day score."""
    from ml_tasks.scoring import day_end

    record = registry.champion("churn", day_end(day), dsn=dsn)
    if record is None:
        return []
    model = registry.load_churn_model(record)
    start, end = record.train_start, record.train_end
    columns = list(model.feature_names)
    reference = reference_sample(record, model, dsn=dsn, config=config)
    current = _features(dsn, [day], columns, None)
    if current.empty or reference.empty:
        return []
    rows = []
    for column in columns:
        ref, cur = reference[column], current[column]
        if ref.dtype == object or cur.dtype == object:  # categories: codes of the reference
            codes = {v: i for i, v in enumerate(sorted(ref.dropna().astype(str).unique()))}
            ref = ref.astype(str).map(codes).astype(float)
            cur = cur.astype(str).map(codes).fillna(len(codes)).astype(float)
        value = psi(ref.astype(float).to_numpy(), cur.astype(float).to_numpy(), config.bins)
        rows.append({"column_name": column, "psi": value})
    scores_cur = _day_scores(dsn, day, record.version, len(current))
    if scores_cur is None:  # not scored yet, or by another model: score it here
        scores_cur = model.predict(current)["p_churn_30d"].to_numpy()
    rows.append(
        {
            "column_name": SCORE_COLUMN,
            "psi": psi(reference[SCORE_COLUMN].to_numpy(), scores_cur, config.bins),
        }
    )
    for row in rows:
        row.update(
            status=config.status(row["psi"]),
            model_name=record.name,
            model_version=record.version,
            reference_start=start,
            reference_end=end,
            rows=len(current),
        )
    return rows


def _ece(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    index = np.minimum((p * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        mask = index == b
        if mask.any():
            total += mask.mean() * abs(p[mask].mean() - y[mask].mean())
    return float(total)


def realized(day: date, *, dsn: str) -> list[dict]:
    """How the churn scores of D − H did, for each horizon whose labels are known by D."""
    from sklearn.metrics import roc_auc_score

    from ml_tasks import labels

    scored = {}
    with warehouse.connect(dsn) as conn:
        for horizon in HORIZONS:
            scored_for = day - timedelta(days=horizon)
            scores = warehouse.read_arrow(
                conn,
                sql.SQL(
                    "SELECT user_id, {col} AS p, model_version FROM scores.churn WHERE dt = {d}"
                ).format(col=sql.Identifier(f"p_churn_{horizon}d"), d=sql.Literal(scored_for)),
            ).to_pandas()
            if not scores.empty:
                scored[horizon] = (scored_for, scores)
    if not scored:
        return []
    # One labels query for every scored date: each (date, horizon) label is the one a
    # query for that date alone gives (as_of is date + horizon, within every window), and
    # the dates share most of their scans (3.5-4.4 s as three queries, 2.0-2.3 s as one,
    # at 25,000 users).
    every_label = labels.churn_labels(
        [scored_for for scored_for, _ in scored.values()], day, horizons=sorted(scored), dsn=dsn
    )
    rows = []
    for horizon, (scored_for, scores) in scored.items():
        label = every_label[f"label_{horizon}"]
        known = every_label[(every_label["dt"] == scored_for) & label.notna()]
        frame = scores.merge(known[["user_id", f"label_{horizon}"]], on="user_id")
        if frame.empty:
            continue
        y = frame[f"label_{horizon}"].astype(int).to_numpy()
        p = frame["p"].to_numpy(dtype=float)
        rows.append(
            {
                "scored_for": scored_for,
                "horizon": horizon,
                "model_name": "churn",
                "model_version": str(frame["model_version"].iloc[0]),
                "as_of": day,
                "rows": len(frame),
                "positives": int(y.sum()),
                "roc_auc": float(roc_auc_score(y, p)) if 0 < y.sum() < len(y) else None,
                "brier": float(np.mean((p - y) ** 2)),
                "ece": _ece(y, p),
                "mean_predicted": float(p.mean()),
                "observed_rate": float(y.mean()),
            }
        )
    return rows


def _chart(drift_rows: list[dict], config: MonitoringConfig) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    top = sorted(drift_rows, key=lambda r: -r["psi"])[:20]
    fig, ax = plt.subplots(figsize=(8, 0.3 * len(top) + 1.2))
    colours = {"ok": "#4c9a2a", "warn": "#e0a800", "alert": "#c0392b"}
    ax.barh(
        [r["column_name"] for r in top][::-1],
        [r["psi"] for r in top][::-1],
        color=[colours[r["status"]] for r in top][::-1],
    )
    for threshold in (config.psi_warn, config.psi_alert):
        ax.axvline(threshold, color="grey", linestyle="--", linewidth=0.8)
    ax.set_xlabel("PSI against the training window")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode()


def write_report(
    day: date,
    summary: dict,
    drift_rows: list[dict],
    realized_rows: list[dict],
    config: MonitoringConfig,
    artifacts: Path,
) -> Path:
    """The day's HTML report (figures, drift chart, realized performance)."""
    path = artifacts / "reports" / f"monitoring-{day.isoformat()}.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    parts = [
        f"<html><head><meta charset='utf-8'><title>Encore monitoring {day}</title></head>",
        "<body style='font-family:sans-serif;max-width:1000px;margin:2em auto'>",
        f"<h1>Encore monitoring, {day}</h1>",
        f"<pre>{html.escape(json.dumps(summary, indent=2, default=str))}</pre>",
    ]
    if drift_rows:
        parts.append("<h2>Drift against the training window</h2>")
        parts.append(f"<img src='data:image/png;base64,{_chart(drift_rows, config)}'>")
        parts.append(
            "<table border=1 cellpadding=3><tr><th>column</th><th>PSI</th><th>status</th></tr>"
        )
        for r in sorted(drift_rows, key=lambda r: -r["psi"]):
            parts.append(
                f"<tr><td>{html.escape(r['column_name'])}</td>"
                f"<td>{r['psi']:.4f}</td><td>{r['status']}</td></tr>"
            )
        parts.append("</table>")
    parts.append("<h2>Realized performance of past scores</h2>")
    if realized_rows:
        parts.append(
            "<table border=1 cellpadding=3><tr><th>scored for</th><th>horizon</th>"
            "<th>rows</th><th>ROC AUC</th><th>Brier</th><th>ECE</th>"
            "<th>predicted</th><th>observed</th></tr>"
        )
        for r in realized_rows:
            auc = "n/a" if r["roc_auc"] is None else f"{r['roc_auc']:.3f}"
            parts.append(
                f"<tr><td>{r['scored_for']}</td><td>{r['horizon']} d</td><td>{r['rows']}</td>"
                f"<td>{auc}</td><td>{r['brier']:.4f}</td><td>{r['ece']:.4f}</td>"
                f"<td>{r['mean_predicted']:.3f}</td><td>{r['observed_rate']:.3f}</td></tr>"
            )
        parts.append("</table>")
    else:
        parts.append("<p>No past scores have known labels yet.</p>")
    parts.append("</body></html>")
    path.write_text("\n".join(parts), encoding="utf-8")
    return path


def monitor_day(
    day: date, *, run_id: str, dsn: str | None = None, artifacts: Path | None = None
) -> dict:
    """Fraud flags, drift, realized performance and the report for ``day``."""
    started = time.perf_counter()
    target = warehouse.ensure_migrated(dsn)
    config = MonitoringConfig.load()
    artifacts = Path(artifacts or get_settings().artifacts)
    flags = fraud.ensure_day(day, run_id=run_id, dsn=target)
    drift_rows = drift(day, dsn=target, config=config)
    realized_rows = realized(day, dsn=target)
    now = datetime.now(UTC)
    summary = {
        "day": day.isoformat(),
        "fraud": flags,
        "drift_columns": len(drift_rows),
        "drift_warn": sorted(r["column_name"] for r in drift_rows if r["status"] == "warn"),
        "drift_alert": sorted(r["column_name"] for r in drift_rows if r["status"] == "alert"),
        "realized": [
            {k: r[k] for k in ("scored_for", "horizon", "rows", "roc_auc", "brier", "ece")}
            for r in realized_rows
        ],
    }
    report = write_report(day, summary, drift_rows, realized_rows, config, artifacts)
    with warehouse.connect(target) as conn, conn.transaction():
        conn.execute("DELETE FROM monitoring.drift WHERE dt = %s", (day,))
        for r in drift_rows:
            conn.execute(
                "INSERT INTO monitoring.drift (dt, model_name, model_version, column_name, psi,"
                " status, reference_start, reference_end, rows, run_id, computed_at)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (
                    day,
                    r["model_name"],
                    r["model_version"],
                    r["column_name"],
                    r["psi"],
                    r["status"],
                    r["reference_start"],
                    r["reference_end"],
                    r["rows"],
                    run_id,
                    now,
                ),
            )
        for r in realized_rows:
            conn.execute(
                "DELETE FROM monitoring.realized_performance WHERE scored_for = %s"
                " AND horizon = %s AND model_name = %s",
                (r["scored_for"], r["horizon"], r["model_name"]),
            )
            conn.execute(
                "INSERT INTO monitoring.realized_performance (scored_for, horizon, model_name,"
                " model_version, as_of, rows, positives, roc_auc, brier, ece, mean_predicted,"
                " observed_rate, run_id, computed_at) VALUES"
                " (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (
                    r["scored_for"],
                    r["horizon"],
                    r["model_name"],
                    r["model_version"],
                    r["as_of"],
                    r["rows"],
                    r["positives"],
                    r["roc_auc"],
                    r["brier"],
                    r["ece"],
                    r["mean_predicted"],
                    r["observed_rate"],
                    run_id,
                    now,
                ),
            )
        conn.execute(
            "INSERT INTO monitoring.reports (dt, path, summary, run_id, created_at)"
            " VALUES (%s, %s, %s::jsonb, %s, %s) ON CONFLICT (dt) DO UPDATE SET"
            " path = excluded.path, summary = excluded.summary, run_id = excluded.run_id,"
            " created_at = excluded.created_at",
            (day, str(report), json.dumps(summary, default=str), run_id, now),
        )
    summary["report"] = str(report)
    summary["seconds"] = round(time.perf_counter() - started, 2)
    log.info(
        "monitored %s in %.2f s: %d drift alerts",
        day,
        summary["seconds"],
        len(summary["drift_alert"]),
    )
    return summary
