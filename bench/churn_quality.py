"""Churn quality report: the issue's quality bars on a simulated world with a fixed seed.

Simulates ``--users`` users over ``--days`` days (seed 23). It ingests every day, flags
fraud and builds features, then validates the feature days the model trains on. It trains
the churn model with the shipped ``config/churn.yaml`` as of the last day and prints
``encore evaluate``'s quality bars:

- the 30-day holdout ROC AUC against the AUC of the simulator's true score on the same users
  and days (target ratio >= 0.95);
- the share of rows whose probabilities are monotone in the horizon (target 100%);
- the expected calibration error per evaluated horizon (target <= 0.03).

With ``--forward-days F`` the world runs F days past the training day, and the model is
also evaluated out of time on the scoring dates after its training day whose labels are
known by the world's end (:func:`ml_tasks.churn.training.forward_evaluation`): the only way
to measure the 90-day horizon, whose labels need 90 + 27 days of future. F >= 118 covers it.

Usage: ``python bench/churn_quality.py [--users 1500] [--days 130] [--forward-days 130]``
(a few minutes; about twice that with the forward days). ``--keep DIR`` keeps the world
(its database and landing files) and ``--reuse DSN DIR`` trains and evaluates again on it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ingest_bench import Database, _admin_dsn

from ml_tasks import feature_validation, features, fraud, registry
from ml_tasks.churn import ChurnConfig, plan_splits, train_churn
from ml_tasks.churn.training import compare_with_truth, forward_evaluation
from ml_tasks.ingest import ingest_day
from ml_tasks.simulate import simulate_world

START = date(2026, 1, 5)
log = logging.getLogger("churn_quality")


def build_world(
    dsn: str, users: int, days: int, workdir: Path, forward_days: int = 0, burn_in_days: int = 0
) -> float:
    """Simulate the world under ``workdir`` and load it into ``dsn``; returns seconds."""
    landing = workdir / "landing"
    t0 = time.perf_counter()
    simulate_world(
        landing,
        users=users,
        tracks=max(150, users // 8),
        start=START,
        days=days + forward_days,
        seed=23,
        preview_share=0.0,
        burn_in_days=burn_in_days,
    )
    last = START + timedelta(days=days - 1)
    for offset in range(days + forward_days):
        day = START + timedelta(days=offset)
        ingest_day(day, run_id="quality", dsn=dsn, landing_root=landing)
        fraud.detect_day(day, run_id="quality", dsn=dsn)
        features.build_day(day, run_id="quality", dsn=dsn)
    splits = plan_splits(last, ChurnConfig.load(), START)
    for day in splits.all:
        feature_validation.validate_features(
            day, run_id="quality", dsn=dsn, artifacts=workdir / "artifacts"
        )
    return time.perf_counter() - t0


def forget_churn_models(dsn: str) -> None:
    """Drop the churn models a kept world was trained with, so it trains anew (the trainer
    would otherwise reuse the model registered for the same inputs)."""
    from ml_tasks import warehouse

    with warehouse.connect(dsn) as conn:
        for table in ("champion_history", "model_registry", "training_runs"):
            conn.execute(f"DELETE FROM ml.{table} WHERE model_name = 'churn'")
        conn.commit()


def run(
    dsn: str,
    users: int,
    days: int,
    workdir: Path,
    forward_days: int = 0,
    *,
    reuse: bool = False,
    burn_in_days: int = 0,
) -> dict:
    """Build the world (unless ``reuse``: ``dsn`` and ``workdir`` hold it already), train
    on day ``days``, and return the quality report."""
    landing = workdir / "landing"
    last = START + timedelta(days=days - 1)
    if reuse:
        built = 0.0
        forget_churn_models(dsn)
    else:
        built = build_world(dsn, users, days, workdir, forward_days, burn_in_days)
    t1 = time.perf_counter()
    trained = train_churn(last, run_id="quality", dsn=dsn, artifacts=workdir / "artifacts")
    train_seconds = time.perf_counter() - t1
    record = registry.get("churn", trained["version"], dsn=dsn)
    model = registry.load_churn_model(record)
    truth = compare_with_truth(last, model, Path(f"{landing}_truth"), dsn=dsn)
    forward = (
        forward_evaluation(
            model,
            last,
            last + timedelta(days=forward_days),
            Path(f"{landing}_truth"),
            dsn=dsn,
        )
        if forward_days
        else {}
    )
    horizons = {h: v for h, v in record.metrics.items() if h.isdigit()}
    thirty = truth.get("30") or {}
    return {
        "users": users,
        "days": days,
        "burn_in_days": burn_in_days,
        "world_seconds": round(built, 1),
        "train_seconds": round(train_seconds, 1),
        "version": record.version,
        "status": record.status,
        "chosen": record.metrics.get("chosen"),
        "holdout": {
            h: {k: v.get(k) for k in ("roc_auc", "pr_auc", "brier", "ece")}
            for h, v in horizons.items()
        },
        "baseline_roc_auc": {
            h: (record.metrics.get("baseline") or {}).get(h, {}).get("roc_auc") for h in horizons
        },
        "truth": truth,
        "forward": forward,
        "bars": {
            "auc_ratio_30d": thirty.get("ratio"),
            "auc_ratio_30d_ok": (thirty.get("ratio") or 0) >= 0.95,
            "monotone_share": truth.get("monotone_share"),
            "monotone_ok": truth.get("monotone_share") == 1.0,
            "ece": {h: v.get("ece") for h, v in horizons.items()},
            "ece_ok": all((v.get("ece") or 1) <= 0.03 for v in horizons.values()),
            "forward_ece": {h: v.get("ece") for h, v in forward.items() if h.isdigit()},
            "forward_ece_ok": all(
                (v.get("ece") or 1) <= 0.03 for h, v in forward.items() if h.isdigit()
            ),
            "not_evaluated_horizons": [
                h
                for h in ("7", "30", "90")
                if (h not in horizons or horizons[h].get("ece") is None) and h not in forward
            ],
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1500)
    parser.add_argument("--days", type=int, default=130, help="days up to the training day")
    parser.add_argument(
        "--forward-days", type=int, default=0, help="days simulated after the training day"
    )
    parser.add_argument(
        "--burn-in-days",
        type=int,
        default=0,
        help="days the world runs before its first landing day (simulate_world's burn-in)",
    )
    parser.add_argument("--json", help="also write the report to this file")
    parser.add_argument(
        "--keep",
        metavar="DIR",
        help="keep the world: its landing files under DIR and its database (printed), for --reuse",
    )
    parser.add_argument(
        "--reuse",
        nargs=2,
        metavar=("DSN", "DIR"),
        help="train and evaluate again on a world kept by --keep (same --users/--days/"
        "--forward-days), forgetting its earlier churn models",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    with contextlib.ExitStack() as stack:
        if args.reuse:
            dsn, workdir = args.reuse[0], Path(args.reuse[1])
        else:
            db = Database(_admin_dsn())
            dsn = db.dsn
            if args.keep:
                workdir = Path(args.keep)
                workdir.mkdir(parents=True, exist_ok=True)
            else:  # dropped after the temporary folder is removed
                stack.callback(db.drop)
                tmp = stack.enter_context(
                    tempfile.TemporaryDirectory(prefix="encore-churn-quality-")
                )
                workdir = Path(tmp)
        report = run(
            dsn,
            args.users,
            args.days,
            workdir,
            args.forward_days,
            reuse=bool(args.reuse),
            burn_in_days=args.burn_in_days,
        )
    if args.keep and not args.reuse:
        print(f"kept: --reuse {dsn} {args.keep}")
    bars = report["bars"]
    print(
        f"Churn quality on a simulated world ({args.users:,} users, {args.days} days,"
        f" {args.burn_in_days} days of burn-in, seed 23)"
    )
    print(
        f"  model {report['version']} ({report['chosen']}), {report['status']};"
        f" trained in {report['train_seconds']} s"
    )
    for h, m in report["holdout"].items():
        truth = report["truth"].get(h) or {}
        print(
            f"  {h:>2}d: ROC AUC {m['roc_auc']:.3f} (baseline {report['baseline_roc_auc'][h]:.3f},"
            f" true score {truth.get('true_hazard_auc') or float('nan'):.3f},"
            f" ratio {truth.get('ratio') or float('nan'):.3f}), PR AUC {m['pr_auc']:.3f},"
            f" Brier {m['brier']:.4f}, ECE {m['ece']:.4f}"
        )
    print(
        f"  bars: 30-day AUC ratio {bars['auc_ratio_30d']:.3f} (>= 0.95:"
        f" {'met' if bars['auc_ratio_30d_ok'] else 'NOT met'}); monotone rows"
        f" {bars['monotone_share']:.0%} ({'met' if bars['monotone_ok'] else 'NOT met'});"
        f" ECE <= 0.03 ({'met' if bars['ece_ok'] else 'NOT met'});"
        f" not evaluable in this world: {bars['not_evaluated_horizons'] or 'none'}"
    )
    forward = report["forward"]
    if forward.get("dates"):
        print(
            f"  out of time: {forward['dates']} scoring dates {forward['first']} .."
            f" {forward['last']} after the training day, labels as of the world's end"
        )
        for h, m in ((h, m) for h, m in forward.items() if h.isdigit()):
            print(
                f"  {h:>2}d: ROC AUC {m['roc_auc']:.3f} (true score"
                f" {m.get('true_hazard_auc') or float('nan'):.3f}, ratio"
                f" {m.get('auc_ratio') or float('nan'):.3f}), PR AUC {m['pr_auc']:.3f},"
                f" Brier {m['brier']:.4f}, ECE {m['ece']:.4f} over {m['dates']} dates,"
                f" {m['rows']:,} rows"
            )
        print(
            f"  out-of-time ECE <= 0.03: {'met' if bars['forward_ece_ok'] else 'NOT met'};"
            f" monotone rows {forward['monotone_share']:.0%}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
