"""``make demo``: simulate a small world and run Encore's DAGs over it through Airflow.

Starts the embedded warehouse when ``WAREHOUSE_DSN`` is unset, writes a simulated week of
landing data, runs every DAG for every day with ``dag.test()`` (Airflow's own task runner,
against a SQLite metadata DB under ``var/airflow``), then prints what landed and how to look
at it. Re-running it gives the same warehouse state.
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

#: The DAGs of the nightly chain that exist so far, in the order they run for a day.
CHAIN = ("ingest_daily",)


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


def _report(dsn: str, outcomes, start: date, days: int) -> str:
    settings = get_settings()
    lines = ["", "Encore demo: what the DAGs produced", "=" * 36, ""]
    lines.append("DAG runs (through Airflow's dag.test):")
    for dag_id, day, state, seconds in outcomes:
        lines.append(f"  {dag_id:<14} {day}  {state:<8} {seconds:5.1f}s")
    with warehouse.connect(dsn) as conn:
        lines += ["", "Per landing day (raw.ingest_log):"]
        lines.append(f"  {'day':<11}{'dataset':<21}{'read':>9}{'accepted':>10}{'quarantined':>12}")
        for row in conn.execute(
            "SELECT dt, dataset, sum(rows_read), sum(rows_accepted), sum(rows_quarantined)"
            " FROM raw.ingest_log GROUP BY 1, 2 ORDER BY 1, 2"
        ):
            lines.append(f"  {row[0]!s:<11}{row[1]:<21}{row[2]:>9}{row[3]:>10}{row[4]:>12}")
        lines += ["", "Most common quarantine reasons:"]
        for reason, count in conn.execute(
            "SELECT r, count(*) FROM quarantine.rejected_rows, unnest(reasons) r"
            " GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 8"
        ):
            lines.append(f"  {count:>5}  {reason}")
        lines += ["", "Validation (monitoring.validation_results, latest per suite and day):"]
        for dt, ok, failed in conn.execute(
            "SELECT dt, bool_and(success), sum(failed) FROM ("
            " SELECT DISTINCT ON (suite, dt) suite, dt, success, failed"
            " FROM monitoring.validation_results ORDER BY suite, dt, validated_at DESC) v"
            " GROUP BY dt ORDER BY dt"
        ):
            lines.append(f"  {dt}  {'passed' if ok else f'FAILED ({failed} expectations)'}")
        totals = conn.execute(
            "SELECT (SELECT count(*) FROM raw.listening_events),"
            " (SELECT count(*) FROM raw.users), (SELECT count(*) FROM raw.tracks)"
        ).fetchone()
    docs = sorted(settings.artifacts.glob("gx/**/index.html"))
    lines += [
        "",
        f"Warehouse totals: {totals[0]:,} plays, {totals[1]:,} users, {totals[2]:,} tracks.",
        "",
        "Look at it:",
        f"  psql '{dsn}'",
        "    \\dn+                      -- schemas, with their descriptions",
        "    \\d+ raw.listening_events  -- columns and comments, one partition per day",
        "    SELECT dataset, reasons, payload FROM quarantine.rejected_rows LIMIT 5;",
        "  Data Docs (Great Expectations): "
        + (str(docs[0]) if docs else f"under {settings.artifacts / 'gx'}"),
        "  Airflow UI: make airflow   (then http://localhost:8080; the login is printed)",
        f"  Landing files: {settings.landing_root}",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--start", type=date.fromisoformat, default=date(2026, 10, 1))
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--users", type=int, default=3000)
    parser.add_argument("--tracks", type=int, default=600)
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
    _airflow_db()
    outcomes = _run_chain(args.start, args.days)
    print(_report(dsn, outcomes, args.start, args.days))
    failed = [o for o in outcomes if o[2] != "success"]
    if failed:
        print(f"\n{len(failed)} DAG run(s) failed: see the log above.", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
