"""``make demo``: simulate a world and run Encore's nightly chain over it through Airflow.

Starts the embedded warehouse when ``WAREHOUSE_DSN`` is unset and simulates ``--days`` days
of landing data. The history before the last ``--chain-days`` days is loaded with the
functions the DAGs call (ingest, fraud flags, features; the feature days a model trains on
are validated too), as a platform taking over an existing warehouse would. Then, for each
of the last days, the DAGs run through ``dag.test()`` (Airflow's own task runner, with a
SQLite metadata DB under ``var/airflow``): ingest_daily, audio_features, features_daily,
retrain_nightly (on the first chain day) and score_daily. Finally it prints what was
produced and how to look at it. Re-running it gives the same warehouse state.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import time
from datetime import date, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("AIRFLOW_HOME", str(ROOT / "var" / "airflow"))
os.environ.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(ROOT / "dags"))
os.environ.setdefault("AIRFLOW__CORE__PLUGINS_FOLDER", str(ROOT / "plugins"))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
sys.path.insert(0, str(ROOT / "plugins"))

from ml_tasks import warehouse  # noqa: E402
from ml_tasks.settings import get_settings  # noqa: E402

log = logging.getLogger("encore.demo")

#: The DAGs of the nightly chain, in the order they run for a day.
CHAIN = ("ingest_daily", "audio_features", "features_daily", "retrain_nightly", "score_daily")
#: DAGs run only on the first chain day (retraining nightly is the scheduler's job; the
#: demo trains once to keep its run short).
FIRST_DAY_ONLY = ("retrain_nightly",)


def _airflow_db() -> None:
    home = Path(os.environ["AIRFLOW_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    log.info("migrating Airflow's metadata DB under %s", home)
    subprocess.run(
        [str(Path(sys.executable).parent / "airflow"), "db", "migrate"],
        check=True,
        capture_output=True,
    )


def _simulate(landing: Path, start: date, days: int, users: int, tracks: int) -> None:
    from ml_tasks.simulate import simulate_world

    log.info(
        "simulating %d users, %d tracks, %d days from %s into %s",
        users,
        tracks,
        days,
        start,
        landing,
    )
    summary = simulate_world(
        landing,
        users=users,
        tracks=tracks,
        start=start,
        days=days,
        seed=2026,
        bad_rate=0.002,
        bot_share=0.003,
        preview_share=0.5,
    )
    log.info("landing: %s", {k: v for k, v in summary.to_dict()["rows"].items()})


def _bootstrap(dsn: str, start: date, days: int, chain_start: date) -> None:
    """Load the history before the chain with the DAGs' own functions."""
    from ml_tasks import feature_validation, features, fraud
    from ml_tasks.churn import ChurnConfig, plan_splits
    from ml_tasks.ingest import ingest_day
    from ml_tasks.popularity import PopularityConfig
    from ml_tasks.popularity import training as popularity_training

    began = time.perf_counter()
    history = [start + timedelta(days=i) for i in range((chain_start - start).days)]
    for day in history:
        ingest_day(day, run_id="demo-history", dsn=dsn)
        fraud.detect_day(day, run_id="demo-history", dsn=dsn)
        features.build_day(day, run_id="demo-history", dsn=dsn)
    # the first models' gates require the feature days they train on to have passed GX
    churn_days = plan_splits(chain_start, ChurnConfig.load(), start).all
    popularity_days = popularity_training.scoring_dates(
        popularity_training.plan_splits(chain_start, PopularityConfig.load(), start)
    )
    validated = sorted({*churn_days, *popularity_days})
    feature_validation.validate_feature_days(validated, run_id="demo-history", dsn=dsn)
    log.info(
        "history: %d days loaded, %d feature days validated in %.0f s",
        len(history),
        len(validated),
        time.perf_counter() - began,
    )


def _run_chain(start: date, days: int) -> list[tuple[str, date, str, float]]:
    import pendulum
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    if bag.import_errors:
        raise SystemExit(f"DAG import errors: {bag.import_errors}")
    outcomes = []
    for offset in range(days):
        day = start + timedelta(days=offset)
        for dag_id in CHAIN:
            if dag_id in FIRST_DAY_ONLY and offset > 0:
                continue
            dag = bag.get_dag(dag_id)
            began = time.perf_counter()
            # The run for the interval [D, D+1) is made at D+1, as the scheduler does.
            run = dag.test(
                logical_date=pendulum.datetime(day.year, day.month, day.day, tz="UTC")
                + timedelta(days=1)
            )
            outcomes.append((dag_id, day, str(run.state), time.perf_counter() - began))
            log.info("%s %s: %s in %.1fs", dag_id, day, run.state, outcomes[-1][3])
    return outcomes


def _report(dsn: str, outcomes, chain_start: date) -> str:
    settings = get_settings()
    lines = ["", "Encore demo: what the nightly chain produced", "=" * 44, ""]
    lines.append("DAG runs (through Airflow's dag.test):")
    for dag_id, day, state, seconds in outcomes:
        lines.append(f"  {dag_id:<16} {day}  {state:<8} {seconds:5.1f}s")
    with warehouse.connect(dsn) as conn:
        lines += ["", "Landing data (raw.ingest_log, all days):"]
        lines.append(f"  {'dataset':<21}{'days':>6}{'read':>11}{'accepted':>11}{'quarantined':>12}")
        for row in conn.execute(
            "SELECT dataset, count(DISTINCT dt), sum(rows_read), sum(rows_accepted),"
            " sum(rows_quarantined) FROM raw.ingest_log GROUP BY 1 ORDER BY 1"
        ):
            lines.append(f"  {row[0]:<21}{row[1]:>6}{row[2]:>11,}{row[3]:>11,}{row[4]:>12,}")
        lines += ["", "Most common quarantine reasons:"]
        for reason, count in conn.execute(
            "SELECT r, count(*) FROM quarantine.rejected_rows, unnest(reasons) r"
            " GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 5"
        ):
            lines.append(f"  {count:>5}  {reason}")
        lines += ["", "Chain days: validation verdicts, fraud flags, features, scores:"]
        for day, verdicts, flagged, users, tracks, scored, at_risk in conn.execute(
            "SELECT d.dt,"
            " (SELECT string_agg(suite || '=' || CASE WHEN success THEN 'ok' ELSE 'FAILED' END,"
            "   ' ' ORDER BY suite) FROM (SELECT DISTINCT ON (suite) suite, success"
            "   FROM monitoring.validation_results v WHERE v.dt = d.dt"
            "   ORDER BY suite, validated_at DESC) x),"
            " (SELECT count(*) FROM monitoring.stream_anomalies a"
            "   WHERE a.dt = d.dt AND a.is_flagged),"
            " (SELECT count(*) FROM features.user_daily f WHERE f.dt = d.dt),"
            " (SELECT count(*) FROM features.track_daily t WHERE t.dt = d.dt),"
            " (SELECT count(*) FROM scores.churn c WHERE c.dt = d.dt),"
            " (SELECT count(*) FROM scores.churn c WHERE c.dt = d.dt"
            "   AND c.risk_tier IN ('high', 'critical'))"
            " FROM (SELECT DISTINCT dt FROM raw.ingest_log WHERE dt >= %s) d ORDER BY 1",
            (chain_start,),
        ):
            lines.append(
                f"  {day}  {users:,} users / {tracks:,} tracks featurized,"
                f" {flagged} fraud user-days, {scored:,} users scored ({at_risk:,} at risk)"
            )
            lines.append(f"    validation: {verdicts}")
        lines += ["", "Models (ml.model_registry; churn metrics in analytics.model_leaderboard):"]
        for row in conn.execute(
            "SELECT model_name, version, status, family, roc_auc_7d, roc_auc_30d,"
            " baseline_roc_auc_30d, ece_30d, model_card_uri,"
            " (SELECT gate_report -> 'reasons' ->> 0 FROM ml.model_registry r"
            "   WHERE r.model_name = l.model_name AND r.version = l.version)"
            " FROM analytics.model_leaderboard l ORDER BY trained_at"
        ):
            name, version, status, family, auc7, auc30, base30, ece30, card, why = row
            if name == "churn":
                lines.append(
                    f"  {name} {version} {status} ({family}): ROC AUC 7d {_fmt(auc7)},"
                    f" 30d {_fmt(auc30)} (baseline {_fmt(base30)}), ECE 30d {_fmt(ece30)}"
                )
            else:
                lines.append(f"  {name} {version} {status}: {why}")
            lines.append(f"    model card: {card}")
        lines += ["", "Scoring runs of the chain days (scores.scoring_runs):"]
        for day, name, status, detail in conn.execute(
            "SELECT dt, model_name, status, detail FROM scores.scoring_runs WHERE dt >= %s"
            " ORDER BY dt, model_name, finished_at",
            (chain_start,),
        ):
            lines.append(f"  {day} {name:<11} {status:<8} {detail}")
        lines += ["", "Today's intervention plan (analytics.intervention_plan_daily):"]
        for row in conn.execute(
            "SELECT intervention, users_recommended, users_in_plan, cost_in_plan,"
            " expected_net_value_in_plan FROM analytics.intervention_plan_daily"
            " WHERE dt = (SELECT max(dt) FROM scores.interventions) ORDER BY 1"
        ):
            if row[0] == "(none)":
                lines.append(f"  {'no intervention pays off':<30} {row[1]:>6} users")
                continue
            lines.append(
                f"  {row[0]:<30} {row[1]:>6} recommended, {row[2]:>5} in budget,"
                f" cost ${row[3]:,.2f}, expected net ${row[4]:,.2f}"
            )
    docs = sorted(settings.artifacts.glob("gx/**/local_site/index.html"))
    lines += [
        "",
        "Look at it:",
        f"  psql '{dsn}'",
        "    \\dn+                                -- schemas, with their descriptions",
        "    \\d+ features.user_daily             -- every column is commented",
        "    SELECT * FROM analytics.at_risk_today ORDER BY p_churn_30d DESC LIMIT 10;",
        "    SELECT * FROM analytics.model_leaderboard;",
        "  Data Docs (Great Expectations): "
        + (str(docs[0]) if docs else f"under {settings.artifacts / 'gx'}"),
        "  Airflow UI: make airflow   (then http://localhost:8080; the login is printed)",
        f"  Landing files: {settings.landing_root}",
    ]
    return "\n".join(lines)


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--start", type=date.fromisoformat, default=date(2026, 6, 1))
    parser.add_argument("--days", type=int, default=100, help="days simulated in all")
    parser.add_argument("--chain-days", type=int, default=3, help="last days run through the DAGs")
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--tracks", type=int, default=400)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    for noisy in ("great_expectations", "airflow", "alembic", "sqlalchemy"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    settings = get_settings()
    dsn = warehouse.ensure_migrated()
    log.info(
        "warehouse: %s (%s)",
        warehouse.redact(dsn),
        "embedded" if settings.uses_embedded_warehouse else "WAREHOUSE_DSN",
    )
    _simulate(settings.landing_root, args.start, args.days, args.users, args.tracks)
    chain_start = args.start + timedelta(days=args.days - args.chain_days)
    _bootstrap(dsn, args.start, args.days, chain_start)
    _airflow_db()
    outcomes = _run_chain(chain_start, args.chain_days)
    print(_report(dsn, outcomes, chain_start))
    failed = [o for o in outcomes if o[2] != "success"]
    if failed:
        print(f"\n{len(failed)} DAG run(s) failed: see the log above.", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
