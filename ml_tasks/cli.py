"""``encore``: every stage of the platform from the command line.

Each subcommand calls the same ``ml_tasks`` function the DAGs call. Failures exit non-zero
with a one-line reason on stderr (``--debug`` shows the traceback).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Iterator
from datetime import date, timedelta
from pathlib import Path

log = logging.getLogger("encore")


class CliError(RuntimeError):
    """A user-facing failure with a one-line reason."""


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from exc


def _days(args: argparse.Namespace) -> Iterator[date]:
    end = args.through or args.date
    if end < args.date:
        raise CliError(f"--through {end} is before --date {args.date}")
    day = args.date
    while day <= end:
        yield day
        day += timedelta(days=1)


def _print(payload: object) -> None:
    print(json.dumps(payload, indent=2, default=str))


# --------------------------------------------------------------------------- commands


def cmd_migrate(args: argparse.Namespace) -> None:
    from ml_tasks import warehouse

    dsn = warehouse.resolve_dsn(dsn=args.dsn)
    with warehouse.connect(dsn, autocommit=True) as conn:
        applied = warehouse.migrate(conn)
        total = conn.execute("SELECT count(*) FROM ml.schema_migrations").fetchone()[0]
    _print(
        {
            "applied": [m.path.name for m in applied],
            "migrations_recorded": total,
            "warehouse": warehouse.redact(dsn),
        }
    )


def cmd_simulate(args: argparse.Namespace) -> None:
    from ml_tasks.settings import get_settings
    from ml_tasks.simulate import simulate_world

    out = Path(args.out) if args.out else get_settings().landing_root
    summary = simulate_world(
        out,
        users=args.users,
        tracks=args.tracks,
        start=args.start,
        days=args.days,
        seed=args.seed,
        bad_rate=args.bad_rate,
        truth_out=Path(args.truth_out) if args.truth_out else None,
        bot_share=args.bot_share,
        preview_share=args.preview_share,
        burn_in_days=args.burn_in_days,
    )
    _print(summary.to_dict())


def cmd_ingest(args: argparse.Namespace) -> None:
    import time

    from ml_tasks import ingest

    results = []
    for day in _days(args):
        deadline = time.monotonic() + args.wait
        while True:
            missing = ingest.missing_markers(day)
            if not missing or time.monotonic() >= deadline:
                break
            time.sleep(min(5.0, max(0.1, deadline - time.monotonic())))
        result = ingest.ingest_day(day, run_id=args.run_id, dsn=args.dsn)
        results.append(result.to_dict())
        if args.validate:
            from ml_tasks import validation

            validation.validate_day(day, run_id=result.run_id, dsn=args.dsn)
            results[-1]["validation"] = "passed"
    _print(results if len(results) > 1 else results[0])


def cmd_validate(args: argparse.Namespace) -> None:
    from ml_tasks import validation

    out = []
    for day in _days(args):
        run_id = args.run_id or f"cli-validate-{day.isoformat()}"
        report = validation.validate_day(day, run_id=run_id, dsn=args.dsn)
        out.append(
            {
                "day": day.isoformat(),
                "success": report.success,
                "suites": {
                    r.suite: {
                        "success": r.success,
                        "failed": r.failed,
                        "data_docs": r.data_docs_path,
                    }
                    for r in report.reports
                },
            }
        )
    _print(out if len(out) > 1 else out[0])


def cmd_features(args: argparse.Namespace) -> None:
    from ml_tasks import feature_validation, features, fraud

    out = []
    for day in _days(args):
        run_id = args.run_id or f"cli-features-{day.isoformat()}"
        flags = fraud.detect_day(day, run_id=run_id, dsn=args.dsn)
        result = features.build_day(day, run_id=run_id, dsn=args.dsn).to_dict()
        result["fraud"] = flags
        if not args.skip_validation:
            report = feature_validation.validate_features(day, run_id=run_id, dsn=args.dsn)
            result["validation"] = {r.suite: r.data_docs_path for r in report.reports}
        if not args.skip_materialize:
            from ml_tasks import feature_store

            feature_store.apply(dsn=args.dsn)
            result["materialized"] = feature_store.materialize_day(day, dsn=args.dsn)
        out.append(result)
    _print(out if len(out) > 1 else out[0])


def cmd_feast(args: argparse.Namespace) -> None:
    from ml_tasks import feature_store

    if args.action == "apply":
        _print(feature_store.apply(dsn=args.dsn))
        return
    if args.date is None:
        raise CliError("feast materialize needs --date")
    out = [
        feature_store.materialize_day(day, dsn=args.dsn, method=args.method) for day in _days(args)
    ]
    _print(out if len(out) > 1 else out[0])


def cmd_train(args: argparse.Namespace) -> None:
    if args.model == "churn":
        from ml_tasks.churn import train_churn as train
    elif args.model == "genre":
        from ml_tasks.genre import train_genre as train
    else:
        from ml_tasks.popularity import train_popularity as train

    out = []
    for day in _days(args):
        run_id = args.run_id or f"cli-train-{args.model}-{day.isoformat()}"
        out.append(train(day, run_id=run_id, dsn=args.dsn))
    _print(out if len(out) > 1 else out[0])


def cmd_audio(args: argparse.Namespace) -> None:
    from ml_tasks import audio, genre

    out = []
    for day in _days(args):
        run_id = args.run_id or f"cli-audio-{day.isoformat()}"
        result = {
            "features": audio.extract_day(day, run_id=run_id, dsn=args.dsn, workers=args.workers),
            "genres": genre.score_genres(day, run_id=run_id, dsn=args.dsn),
        }
        out.append(result)
    _print(out if len(out) > 1 else out[0])


def cmd_monitor(args: argparse.Namespace) -> None:
    from ml_tasks import monitoring

    out = []
    for day in _days(args):
        run_id = args.run_id or f"cli-monitor-{day.isoformat()}"
        out.append(monitoring.monitor_day(day, run_id=run_id, dsn=args.dsn))
    _print(out if len(out) > 1 else out[0])


def cmd_deadline(args: argparse.Namespace) -> None:
    from ml_tasks import deadlines

    out = [deadlines.chain_status(day, args.dsn) for day in _days(args)]
    _print(out if len(out) > 1 else out[0])
    overdue = [s["day"] for s in out if s["overdue"]]
    if args.check and overdue:
        raise CliError(f"overdue: the nightly chain of {', '.join(overdue)} is not done")


def cmd_evaluate(args: argparse.Namespace) -> None:
    from ml_tasks import registry, scoring, warehouse
    from ml_tasks.churn.training import compare_with_truth

    dsn = warehouse.ensure_migrated(args.dsn)
    if args.version:
        record = registry.get(args.model, args.version, dsn=dsn)
    else:
        record = registry.champion(args.model, scoring.day_end(args.date), dsn=dsn)
    if record is None:
        what = f"version {args.version}" if args.version else f"champion when {args.date} closed"
        raise CliError(f"no {args.model} model: there is no {what}")
    horizons = {
        h: {
            k: record.metrics[h].get(k)
            for k in ("roc_auc", "pr_auc", "brier", "ece", "lift_top_decile")
        }
        for h in sorted(record.metrics, key=lambda k: int(k) if k.isdigit() else 0)
        if h.isdigit()
    }
    report: dict = {
        "model": record.name,
        "version": record.version,
        "status": record.status,
        "holdout": horizons,
        "baseline_roc_auc": {
            h: (record.metrics.get("baseline") or {}).get(h, {}).get("roc_auc") for h in horizons
        },
        "monotone_share": record.metrics.get("monotone_share"),
        "gate": (record.gate_report or {}).get("reasons"),
    }
    if args.truth:
        model = registry.load_churn_model(record)
        truth = compare_with_truth(args.date, model, Path(args.truth), dsn=dsn)
        report["against_simulator_truth"] = truth
        bars = {}
        for h, row in truth.items():
            if isinstance(row, dict) and row.get("true_hazard_auc"):
                bars[f"auc_ratio_{h}d"] = round(row["model_auc"] / row["true_hazard_auc"], 4)
        report["quality_bars"] = {
            **bars,
            "auc_ratio_30d_target": 0.95,
            "monotone_share_target": 1.0,
            "ece_target": 0.03,
            "ece": {h: v["ece"] for h, v in horizons.items()},
        }
    _print(report)


def cmd_score(args: argparse.Namespace) -> None:
    from ml_tasks import scoring

    out = []
    for day in _days(args):
        run_id = args.run_id or f"cli-score-{day.isoformat()}"
        out.append(
            scoring.score_day(day, run_id=run_id, dsn=args.dsn, families=args.families or None)
        )
    _print(out if len(out) > 1 else out[0])


def cmd_bench(args: argparse.Namespace) -> None:
    import os
    from datetime import UTC, datetime

    from ml_tasks import benchmark

    try:
        sizes = [int(x) for x in args.sizes.split(",")] if args.sizes else [args.users]
    except ValueError as exc:
        raise CliError(f"--sizes must be user counts separated by commas: {args.sizes!r}") from exc
    if any(n < 1 for n in sizes):
        raise CliError("every size must be at least 1 user")
    json_path = Path(args.json)
    if args.from_json:
        runs = [
            benchmark.NightRun.from_dict(r)
            for path in args.from_json
            for r in json.loads(Path(path).read_text())
        ]
    else:
        training = benchmark.pick_training(args.days, args.training)
        runs = []
        for users in sorted(sizes):
            started = datetime.now(UTC).isoformat(timespec="seconds")
            results = benchmark.run_night(
                users,
                args.days,
                args.tracks,
                seed=args.seed,
                admin=args.dsn,
                training=training,
                preview_share=args.preview_share,
                workers=args.workers,
                profile=args.profile and users == max(sizes),
                keep=args.keep,
            )
            runs.append(
                benchmark.NightRun(
                    users=users,
                    tracks=args.tracks or benchmark.default_tracks(users),
                    days=args.days,
                    results=results,
                    started_at=started,
                    training=training,
                    load_average=os.getloadavg(),
                )
            )
            print(benchmark.format_table(runs[-1]), flush=True)
            json_path.parent.mkdir(parents=True, exist_ok=True)
            json_path.write_text(json.dumps([r.to_dict() for r in runs], indent=1, default=str))
    command = (
        f"encore bench --sizes {','.join(str(r.users) for r in runs)} --days {runs[0].days}"
        + (f" --tracks {args.tracks}" if args.tracks else "")
        + (
            # the profile the runs used (a page rewritten --from-json has args.training auto)
            f" --training {runs[0].training}"
            if runs[0].training != _auto_training(runs[0].days)
            else ""
        )
        + (f" --out {args.out}" if args.out != "docs/performance.md" else "")
    )
    out = benchmark.write_report(runs, Path(args.out), command=command)
    saved = "" if args.from_json else f"; figures in {json_path}"
    print(f"wrote {out} and {benchmark.plot_path_for(out)}{saved}")


def _auto_training(days: int) -> str | None:
    """The profile ``encore bench --days DAYS`` picks without ``--training`` (None: none fits)."""
    from ml_tasks import benchmark

    try:
        return benchmark.pick_training(days)
    except ValueError:
        return None


def cmd_warehouse(args: argparse.Namespace) -> None:
    from ml_tasks import warehouse
    from ml_tasks.settings import get_settings

    settings = get_settings()
    if args.action == "stop":
        if not settings.uses_embedded_warehouse:
            raise CliError("WAREHOUSE_DSN is set: the warehouse is not the embedded one")
        stopped = warehouse.stop_embedded(settings)
        _print({"embedded": True, "stopped": stopped})
        return
    dsn = warehouse.resolve_dsn(settings)
    if args.action == "dsn":
        print(dsn)
        return
    with warehouse.connect(dsn) as conn:
        version = conn.execute("SHOW server_version").fetchone()[0]
        migrations = conn.execute(
            "SELECT count(*) FROM information_schema.tables"
            " WHERE table_schema = 'ml' AND table_name = 'schema_migrations'"
        ).fetchone()[0]
        applied = (
            conn.execute("SELECT count(*) FROM ml.schema_migrations").fetchone()[0]
            if migrations
            else 0
        )
    _print(
        {
            "warehouse": warehouse.redact(dsn),
            "embedded": settings.uses_embedded_warehouse,
            "server_version": version,
            "migrations_applied": applied,
            "psql": f"psql '{dsn}'",
        }
    )


# --------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="encore", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show tracebacks on failure")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, func: Callable, help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_)
        p.set_defaults(func=func)
        return p

    def add_dsn(p: argparse.ArgumentParser) -> None:
        p.add_argument("--dsn", help="warehouse DSN (default: WAREHOUSE_DSN, else embedded)")

    def add_days(p: argparse.ArgumentParser) -> None:
        p.add_argument("--date", type=_date, required=True, help="UTC day, YYYY-MM-DD")
        p.add_argument("--through", type=_date, help="last day of a range (inclusive)")
        p.add_argument("--run-id", help="run id recorded with the results")

    p = add("migrate", cmd_migrate, "apply pending warehouse migrations (safe to run twice)")
    add_dsn(p)

    p = add("simulate", cmd_simulate, "write a simulated world's landing files")
    p.add_argument("--out", help="landing root to write (default ENCORE_LANDING_ROOT)")
    p.add_argument("--users", type=int, default=2000)
    p.add_argument("--tracks", type=int, default=500)
    p.add_argument("--start", type=_date, required=True, help="first day, YYYY-MM-DD")
    p.add_argument("--days", type=int, default=14)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument(
        "--bad-rate",
        type=float,
        default=0.002,
        help="share of contract-breaking rows per dataset-day",
    )
    p.add_argument("--truth-out", help="ground-truth folder (default OUT_truth beside OUT)")
    p.add_argument(
        "--bot-share",
        type=float,
        default=0.003,
        help="share of accounts that are stream-farming bots",
    )
    p.add_argument(
        "--preview-share", type=float, default=0.5, help="share of tracks with a preview clip (wav)"
    )
    p.add_argument(
        "--burn-in-days",
        type=int,
        default=0,
        help="days the world runs before --start with nothing written, so the landing data"
        " starts from a settled world rather than a freshly drawn one (default 0)",
    )

    p = add("ingest", cmd_ingest, "ingest landing day(s) into raw.* atomically")
    add_days(p)
    add_dsn(p)
    p.add_argument(
        "--wait",
        type=float,
        default=0.0,
        help="seconds to wait for the _SUCCESS markers before failing",
    )
    p.add_argument("--validate", action="store_true", help="run the GX suites afterwards")

    p = add("validate", cmd_validate, "run the Great Expectations suites on raw day(s)")
    add_days(p)
    add_dsn(p)

    p = add(
        "features",
        cmd_features,
        "flag stream fraud, build, validate and materialize feature day(s) (= features_daily)",
    )
    add_days(p)
    add_dsn(p)
    p.add_argument("--skip-validation", action="store_true", help="do not run the GX suites")
    p.add_argument(
        "--skip-materialize", action="store_true", help="do not load the Feast online store"
    )

    p = add("feast", cmd_feast, "Feast: apply the feature repo, or materialize day(s)")
    p.add_argument("action", choices=["apply", "materialize"])
    p.add_argument("--date", type=_date, help="first UTC day to materialize, YYYY-MM-DD")
    p.add_argument("--through", type=_date, help="last day of a range (inclusive)")
    p.add_argument(
        "--method",
        choices=["bulk", "feast"],
        default="bulk",
        help="bulk COPY into Feast's online tables (default) or Feast's own materialize",
    )
    add_dsn(p)

    p = add("train", cmd_train, "train, evaluate, register and gate a model as of day(s)")
    p.add_argument("model", choices=["churn", "genre", "popularity"], help="model family")
    add_days(p)
    add_dsn(p)

    p = add(
        "audio",
        cmd_audio,
        "librosa features of new or changed preview clips of day(s), then genre scores",
    )
    add_days(p)
    add_dsn(p)
    p.add_argument("--workers", type=int, help="decoding processes (default: every core)")

    p = add(
        "monitor",
        cmd_monitor,
        "monitor day(s): fraud flags, drift (PSI), realized performance, the HTML report",
    )
    add_days(p)
    add_dsn(p)

    p = add(
        "deadline",
        cmd_deadline,
        "the nightly chain of day(s): done or not, when due, what is missing, missed deadlines",
    )
    p.add_argument("--date", type=_date, required=True, help="UTC day, YYYY-MM-DD")
    p.add_argument("--through", type=_date, help="last day of a range (inclusive)")
    p.add_argument(
        "--check", action="store_true", help="exit 1 when a day is past due and not done"
    )
    add_dsn(p)

    p = add(
        "evaluate",
        cmd_evaluate,
        "a model's holdout report, and its quality bars against a simulated world's truth",
    )
    p.add_argument("model", choices=["churn"], help="model family")
    p.add_argument("--date", type=_date, required=True, help="the champion when this day closed")
    p.add_argument("--version", help="a registry version instead of the champion")
    p.add_argument("--truth", help="simulator truth folder (OUT_truth) to compare with")
    add_dsn(p)

    p = add(
        "score",
        cmd_score,
        "score day(s) with every family that has a champion (or the ones named)",
    )
    p.add_argument("families", nargs="*", help="model families (default: all), e.g. churn")
    add_days(p)
    add_dsn(p)

    p = add(
        "bench",
        cmd_bench,
        "simulate a world, time every stage of one night beside its floor, write"
        " docs/performance.md",
    )
    p.add_argument("--users", type=int, default=25_000, help="users of the world")
    p.add_argument(
        "--sizes",
        help="one world per size, users separated by commas (the issue's sweep:"
        " 25000,50000,100000,200000); overrides --users",
    )
    p.add_argument(
        "--days",
        type=int,
        default=92,
        help="days simulated; the last is the night (92: the shipped training windows fit,"
        " with two churn training dates)",
    )
    p.add_argument("--tracks", type=int, help="tracks of the world (default: users / 5)")
    p.add_argument("--seed", type=int, default=2026)
    p.add_argument(
        "--training",
        choices=["auto", "shipped", "short", "tiny"],
        default="auto",
        help="training windows and models (auto: shipped when --days allow, else short)",
    )
    p.add_argument(
        "--preview-share", type=float, default=0.5, help="share of tracks with a preview clip"
    )
    p.add_argument("--workers", type=int, help="audio decoding processes (default: every core)")
    p.add_argument(
        "--profile",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="profile the slowest stage of the largest night with pyinstrument",
    )
    p.add_argument("--out", default="docs/performance.md", help="the markdown report to write")
    p.add_argument(
        "--json", default="var/bench/nights.json", help="the measured figures (after each night)"
    )
    p.add_argument(
        "--from-json",
        nargs="+",
        metavar="FILE",
        help="write the report from figures saved by earlier runs (one file per run), run nothing",
    )
    p.add_argument("--keep", action="store_true", help="keep the scratch databases and files")
    p.add_argument(
        "--dsn",
        help="server to create the scratch databases on (default: WAREHOUSE_DSN's, else"
        " 127.0.0.1:5432, else the embedded one)",
    )

    p = add("warehouse", cmd_warehouse, "embedded warehouse: dsn, status, stop")
    p.add_argument("action", choices=["dsn", "status", "stop"])
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("great_expectations", "urllib3", "numba", "matplotlib", "fsspec"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        args.func(args)
    except KeyboardInterrupt:
        print("encore: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if args.debug:
            raise
        reason = " ".join(str(exc).split()) or type(exc).__name__
        print(f"encore {args.command}: error: {reason}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
