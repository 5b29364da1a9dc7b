"""``encore bench`` in small: one night of a tiny world, each stage timed beside its floor,
and the report written from the figures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ml_tasks import benchmark, cli
from ml_tasks.benchmark import NIGHT, RETRAINING, SETUP, NightRun, StageResult

USERS, TRACKS, DAYS = 300, 60, 43  # 43 days: the tiny training profile's shortest history
NIGHT_STAGES = [
    "ingest",
    "validation",
    "fraud flags",
    "features",
    "feature validation",
    "materialization",
    "churn scoring",
    "interventions",
    "popularity scoring",
    "monitoring",
]


@pytest.fixture(scope="module")
def night(pg_admin: str, tmp_path_factory) -> NightRun:
    """One night of 300 users, stages in this process (child processes would import
    Great Expectations, Feast and the model libraries once per stage)."""
    work = tmp_path_factory.mktemp("bench-work")
    results = benchmark.run_night(
        USERS,
        DAYS,
        TRACKS,
        admin=pg_admin,
        training="tiny",
        preview_share=0.0,
        isolate=False,
        past_scores=False,
        workdir=work,
    )
    return NightRun(USERS, TRACKS, DAYS, results, training="tiny")


def test_every_stage_of_the_night_has_time_rows_and_a_floor(night: NightRun) -> None:
    stages = night.of_kind(NIGHT)
    assert [r.stage for r in stages] == NIGHT_STAGES
    for r in stages:
        assert r.seconds > 0, r
        assert r.rows > 0, r
        assert r.floor_seconds is not None and r.floor_seconds > 0, r
        assert r.ratio is not None and r.ratio > 0, r
        assert r.peak_rss_mb is not None and r.peak_rss_mb > 0, r
    assert {r.stage for r in night.of_kind(RETRAINING)} == {"train churn", "train popularity"}
    assert all(r.seconds > 0 for r in night.of_kind(RETRAINING))
    setup = [r.stage for r in night.of_kind(SETUP)]
    assert setup[:2] == ["simulate", "history: ingest, fraud flags, features"]
    skipped = {r.stage for r in night.of_kind(benchmark.SKIPPED)}
    assert skipped == {"train genre", "audio features", "genre scoring"}  # no preview clips
    # the night's rows are the world's: every active user scored, every track forecast
    churn, interventions = night.stage("churn scoring"), night.stage("interventions")
    assert churn.rows == interventions.rows <= USERS
    assert night.stage("popularity scoring").rows >= TRACKS
    # monitoring reuses the fraud stage's flags, so its floor holds no fraud work
    monitoring = night.stage("monitoring")
    assert monitoring.detail["fraud"]["computed"] is False
    assert set(monitoring.detail["floor_parts"]) == {
        "COPY out of the day's features and scores, past scores"
    }


def test_report_has_tables_fits_and_plot(night: NightRun, tmp_path: Path) -> None:
    # a second, larger size made from the first (times doubled): the fit and the plot
    # over sizes without simulating another world
    bigger = NightRun.from_dict(json.loads(json.dumps(night.to_dict())))
    bigger.users, bigger.tracks = 2 * USERS, 2 * TRACKS
    for r in bigger.results:
        r.seconds *= 2
    out = benchmark.write_report([night, bigger], tmp_path / "docs" / "performance.md")
    text = out.read_text()
    plot = tmp_path / "docs" / "performance_stages.png"
    assert plot.stat().st_size > 10_000
    assert "](performance_stages.png)" in text
    for heading in (
        "## Targets",
        "## Time against users",
        "## Peak memory against users",
        f"## The night at {USERS:,} users",
        f"## The night at {2 * USERS:,} users",
        "## Past one machine",
    ):
        assert heading in text
    assert "| ingest | night |" in text
    assert "| churn scoring | " in text
    assert "| night (sum) | " in text
    # times doubled for twice the users: linear, slope from the measured times
    ingest = night.stage("ingest").seconds
    assert f"| ingest | {ingest:,.2f} | {2 * ingest:,.2f} |" in text


def test_cli_writes_the_report_from_saved_figures(night: NightRun, tmp_path: Path) -> None:
    figures = tmp_path / "nights.json"
    figures.write_text(json.dumps([night.to_dict()]))
    out = tmp_path / "performance.md"
    assert cli.main(["bench", "--from-json", str(figures), "--out", str(out)]) == 0
    assert "## The night at 300 users" in out.read_text()
    assert (tmp_path / "performance_stages.png").exists()
    # another report gets its own plot beside it, and says how to reproduce it, with the
    # training profile the figures were measured with
    sweep = tmp_path / "sweep.md"
    assert cli.main(["bench", "--from-json", str(figures), "--out", str(sweep)]) == 0
    assert "](sweep_stages.png)" in sweep.read_text()
    assert f"--training tiny --out {sweep}" in sweep.read_text()
    assert (tmp_path / "sweep_stages.png").exists()


def test_linear_fit_and_verdicts() -> None:
    fit = benchmark.linear_fit([25_000, 50_000, 100_000, 200_000], [3.0, 5.0, 9.0, 17.0])
    assert fit["slope"] == pytest.approx(8e-5)
    assert fit["intercept"] == pytest.approx(1.0)
    assert fit["r2"] == pytest.approx(1.0)
    assert benchmark.growth_verdict(fit) == "linear"
    quadratic = benchmark.linear_fit([1, 2, 4, 8], [1.0, 4.0, 16.0, 64.0])
    assert benchmark.growth_verdict(quadratic).startswith("faster than linear")
    assert benchmark.growth_verdict(benchmark.linear_fit([1], [1.0])) == "needs two sizes or more"
    flat = benchmark.memory_verdict([25_000, 100_000, 200_000], [400, 900, 950], 100_000)
    assert flat["verdict"] == "flat" and flat["from"] == 100_000
    grows = benchmark.memory_verdict([25_000, 200_000], [400.0, 900.0], None)
    assert not grows["flat"]


def test_stage_result_round_trip() -> None:
    r = StageResult("ingest", NIGHT, 2.0, rows=100, floor_seconds=1.0, io_bound=True)
    assert r.ratio == 0.5 and r.rows_per_s == 50
    assert StageResult.from_dict(r.to_dict()) == r


def test_too_few_days_say_how_many() -> None:
    with pytest.raises(ValueError, match=r"--days \d+ or more"):
        benchmark.pick_training(20)
    assert benchmark.pick_training(90) == "shipped"
    assert benchmark.pick_training(60) == "short"
