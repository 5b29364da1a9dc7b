"""docs/adding-a-dag.md, followed literally: its code blocks applied to a copy of the repository.

Every fenced block of the doc whose info string names a path (```python title="dags/x.py"```)
is a step, in order: a ``diff`` block is applied with ``git apply`` and must apply cleanly;
any other block is a new file, which must not exist yet. The copy holds ``dags/``,
``plugins/``, ``sql/``, ``feature_repo/``, ``config/`` and ``ml_tasks/``. Each check runs in a
subprocess with the copy first on ``PYTHONPATH`` and as ``ENCORE_HOME``, so the copy's
modules, SQL files, Feast definitions and configuration are the ones used (this process
keeps the repository's).

The doc's last section lists what is checked, and what is not.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.airflow, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "adding-a-dag.md"
COPIED = ("dags", "plugins", "sql", "feature_repo", "config", "ml_tasks")
BLOCK = re.compile(r'^```(\w+) title="([^"]+)"\n(.*?)^```$', re.MULTILINE | re.DOTALL)
#: What the walkthrough adds (the test follows this doc, so it names them).
DAG_ID = "weekend_daily"
COLUMN = "weekend_share_7d"
SERVICE = "weekend_v1"
FAMILY = "weekend"
ASSET = "encore_weekend_model"
DAY = date(2026, 10, 10)  # the last day of conftest's world
HEAVY = ("pandas", "pyarrow", "tensorflow", "feast", "great_expectations", "sklearn")


def doc_blocks(text: str) -> list[tuple[str, str, str]]:
    """(language, target path, body) of every block of ``text`` that names a file."""
    return [(lang, path, body) for lang, path, body in BLOCK.findall(text)]


def apply_blocks(blocks: list[tuple[str, str, str]], repo: Path) -> None:
    """Write new files and ``git apply`` diffs into ``repo``, failing on the first that does
    not fit (naming the block)."""
    for lang, path, body in blocks:
        target = repo / path
        if lang == "diff":
            paths = re.findall(r"^(?:---|\+\+\+) [ab]/(\S+)$", body, re.MULTILINE)
            assert paths and set(paths) == {path}, f"the diff titled {path} changes {paths}"
            patch = repo.parent / "step.diff"
            patch.write_text(body)
            applied = subprocess.run(
                ["git", "apply", "--verbose", str(patch)],
                cwd=repo,
                capture_output=True,
                text=True,
            )
            assert applied.returncode == 0, (
                f"the doc's diff for {path} no longer applies to the repository:\n{applied.stderr}"
            )
        else:
            assert not target.exists(), (
                f"the doc gives {path} as a new file, but the repository has it: "
                "use a diff block for changes to an existing file"
            )
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(body)


@pytest.fixture(scope="module")
def blocks() -> list[tuple[str, str, str]]:
    return doc_blocks(DOC.read_text())


@pytest.fixture(scope="module")
def repo(blocks, tmp_path_factory) -> Path:
    """A copy of the repository's code with the doc's blocks applied."""
    repo = tmp_path_factory.mktemp("adding-a-dag") / "repo"
    for name in COPIED:
        shutil.copytree(ROOT / name, repo / name, ignore=shutil.ignore_patterns("__pycache__"))
    apply_blocks(blocks, repo)
    return repo


def _env(repo: Path, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "ENCORE_HOME": str(repo),
        "PYTHONPATH": os.pathsep.join([str(repo / "plugins"), str(repo), str(ROOT / "tests")]),
        "AIRFLOW__CORE__DAGS_FOLDER": str(repo / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(repo / "plugins"),
        **extra,
    }


def _in_copy(repo: Path, step: str, *args: str, timeout: int = 300, **env: str) -> Any:
    """Run ``step`` of this module in a subprocess over the copy; returns its JSON answer."""
    code = f"import sys, test_adding_a_dag as t; t.{step}(*sys.argv[1:])"
    out = subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=repo,
        env=_env(repo, **env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert out.returncode == 0, f"{step} failed:\n{out.stdout[-3000:]}\n{out.stderr[-5000:]}"
    return json.loads(out.stdout.strip().splitlines()[-1])


def _answer(value: Any) -> None:
    """The JSON line a subprocess step answers with (its last line of output)."""
    sys.stdout.write("\n" + json.dumps(value, default=str) + "\n")


# --------------------------------------------------------------------------- the tests


def test_the_doc_names_each_step_and_its_blocks_apply(blocks, repo: Path) -> None:
    targets = [path for _, path, _ in blocks]
    assert len(targets) == len(set(targets)), f"a file appears twice: {targets}"
    assert f"dags/{DAG_ID}.py" in targets
    assert any(p.startswith("sql/migrations/") for p in targets), "the migration step"
    assert any(p.startswith("sql/features/") for p in targets), "the feature SQL step"
    assert "feature_repo/definitions.py" in targets, "the Feast step"
    new_modules = [p for lang, p, _ in blocks if lang != "diff" and p.startswith("ml_tasks/")]
    assert new_modules, "the model family step: a new module in ml_tasks/"
    # the migration is the next one: its number follows the repository's last migration
    migration = next(p for p in targets if p.startswith("sql/migrations/"))
    numbers = sorted(int(p.name[:4]) for p in (ROOT / "sql" / "migrations").glob("[0-9]*.sql"))
    assert int(Path(migration).name[:4]) == numbers[-1] + 1, (
        f"{migration} is not the next migration after {numbers[-1]:04d}: renumber it in the doc"
    )
    python = [repo / p for p in targets if p.endswith(".py")]
    config = str(ROOT / "pyproject.toml")
    ruff = Path(sys.executable).parent / "ruff"
    for command in (["check"], ["format", "--check"]):
        checked = subprocess.run(
            [str(ruff), *command, "--config", config, *map(str, python)],
            capture_output=True,
            text=True,
        )
        assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_new_dag_passes_the_team_policy(repo: Path) -> None:
    found = _in_copy(repo, "dagbag_report")
    assert found["import_errors"] == {}
    stems = sorted(p.stem for p in (repo / "dags").glob("*.py") if not p.name.startswith("_"))
    assert sorted(found["dags"]) == stems, "one DAG per file, named after its dag_id"
    assert DAG_ID in found["dags"]
    for dag_id, dag in found["dags"].items():  # the policy of tests/test_dags.py
        assert dag["doc_md"] > 100, f"{dag_id}: doc_md"
        assert dag["tags"] and set(dag["tags"]) <= set(found["tags"]), f"{dag_id}: {dag['tags']}"
        for task, (owner, retries) in dag["tasks"].items():
            assert owner == found["owner"], f"{dag_id}.{task}: owner"
            assert retries >= 2, f"{dag_id}.{task}: retries"
    new = found["dags"][DAG_ID]
    assert new["upstream"] and set(new["upstream"]) <= set(found["assets"]), new["upstream"]
    outlets = {a for names in new["outlets"].values() for a in names}
    assert outlets == {ASSET} and ASSET in found["assets"]
    assert "encore_models" not in outlets, "a new family must not start score_daily"

    parsed = _in_copy(repo, "parse_time", str(repo / "dags" / f"{DAG_ID}.py"))
    assert parsed["heavy"] == [], f"{DAG_ID}.py imports {parsed['heavy']} at top level"
    assert parsed["seconds"] < 2.0, f"{DAG_ID}.py took {parsed['seconds']} s to parse"


def test_the_walkthrough_builds_the_feature_and_registers_the_model(
    repo: Path, world_dsn: str, airflow_db, tmp_path: Path
) -> None:
    """On conftest's simulated world: migrate, build, validate, materialize, run the DAG."""
    found = _in_copy(
        repo,
        "walkthrough",
        DAY.isoformat(),
        WAREHOUSE_DSN=world_dsn,
        ENCORE_ARTIFACTS=str(tmp_path / "artifacts"),
    )
    assert found["migrated"] == [
        next(p.name for p in (repo / "sql" / "migrations").glob("*.sql") if COLUMN in p.read_text())
    ]
    assert found["comment"], f"features.track_daily.{COLUMN} has no COMMENT"
    print("walkthrough steps (s):", found["seconds"])

    rows = found["rows"]  # track_id -> (plays_7d, the column, the recomputation)
    assert len(rows) == found["catalogue"] > 0
    for track, (plays, value, expected) in rows.items():
        if plays == 0:
            assert value is None, f"{track}: {COLUMN} must be NULL without plays"
        else:
            assert value == pytest.approx(expected, abs=1e-12), track
            assert 0.0 <= value <= 1.0, track
    shares = [v for _, v, _ in rows.values() if v is not None]
    assert any(0.0 < v < 1.0 for v in shares), "a 7-day window holds weekdays and a weekend"
    assert found["validated"] == {"features.user_daily": True, "features.track_daily": True}
    assert found["online"], "Feast served no row"
    for track, value in found["online"].items():
        assert value == pytest.approx(rows[track][1], abs=1e-12), track

    assert found["run"]["state"] == "success", (found["run"], found["training_runs"])
    assert found["run"]["events"] == [["train", {"day": DAY.isoformat()}]]
    models = found["models"]
    assert len(models) == 1
    model = models[0]
    metrics, verdict = model["metrics"], model["gate"]["verdict"]
    assert metrics["rows"]["train"] > 0 and metrics["rows"]["holdout"] > 0
    beats = metrics["mae"] < metrics["baseline"]["mae"]
    assert verdict == ("promote" if beats else "keep as candidate"), (metrics, model["gate"])
    assert model["status"] == ("champion" if beats else "candidate")
    assert (found["champion_at_close"] == model["version"]) is beats
    assert found["training_runs"] == [["succeeded", model["version"], None]]
    family = found["page"]
    shown = family["champion"] if beats else family["candidates"][0]
    assert shown["version"] == model["version"]
    assert shown["key_metrics"] == [
        {
            "scope": "holdout",
            "mae": pytest.approx(metrics["mae"]),
            "baseline mae": pytest.approx(metrics["baseline"]["mae"]),
        }
    ]


# --------------------------------------------------------------------------- subprocess steps


def dagbag_report() -> None:
    """The DagBag of the copy's dags/: import errors, and what the team policy looks at."""
    from airflow.dag_processing.dagbag import DagBag
    from airflow.serialization.encoders import coerce_to_core_timetable

    from encore_airflow import assets
    from encore_airflow.common import OWNER, Tag

    bag = DagBag(dag_folder=os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    dags = {}
    for dag_id, dag in bag.dags.items():
        timetable = coerce_to_core_timetable(dag.timetable)
        condition = getattr(timetable, "asset_condition", None)
        dags[dag_id] = {
            "doc_md": len(dag.doc_md or ""),
            "tags": sorted(dag.tags),
            "tasks": {t.task_id: [t.owner, t.retries] for t in dag.tasks},
            "upstream": sorted(k.name for k, _ in condition.iter_assets()) if condition else [],
            "outlets": {t.task_id: [a.name for a in t.outlets] for t in dag.tasks if t.outlets},
        }
    _answer(
        {
            "import_errors": {str(k): str(v) for k, v in bag.import_errors.items()},
            "dags": dags,
            "tags": [t.value for t in Tag],
            "owner": OWNER,
            "assets": [a.name for a in assets.ALL],
        }
    )


def parse_time(path: str) -> None:
    """Seconds to run a DAG file (after importing airflow.sdk), and the heavy modules it pulled."""
    import runpy

    import airflow.sdk  # noqa: F401  (Airflow itself is not the DAG file's cost)

    started = time.perf_counter()
    runpy.run_path(path)
    seconds = time.perf_counter() - started
    _answer({"seconds": seconds, "heavy": [m for m in HEAVY if m in sys.modules]})


def walkthrough(day_text: str) -> None:
    """The doc's steps for one day of the world in ``WAREHOUSE_DSN``: migrate, build, validate
    and materialize the feature day (``encore migrate``, ``encore features`` without its fraud
    step), then ``dag.test()`` the new DAG (``airflow dags test``); report what they left."""
    started = time.perf_counter()
    import pendulum
    from airflow.dag_processing.dagbag import DagBag
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session

    from encore_airflow import ui
    from ml_tasks import feature_store, feature_validation, features, registry, warehouse

    day = date.fromisoformat(day_text)
    dsn = os.environ["WAREHOUSE_DSN"]
    out: dict[str, Any] = {"seconds": {}}
    tick = started

    def lap(step: str) -> None:
        nonlocal tick
        out["seconds"][step] = round(time.perf_counter() - tick, 1)
        tick = time.perf_counter()

    lap("imports")
    with warehouse.connect(dsn, autocommit=True) as conn:
        out["migrated"] = [m.path.name for m in warehouse.migrate(conn)]
    features.build_day(day, run_id="walkthrough", dsn=dsn)
    lap("migrate and build")
    report = feature_validation.validate_features(day, run_id="walkthrough", dsn=dsn)
    out["validated"] = {r.suite: r.success for r in report.reports}
    lap("validate")
    feature_store.apply(dsn=dsn)
    feature_store.materialize_day(day, dsn=dsn)
    lap("feast apply and materialize")

    with warehouse.connect(dsn) as conn:
        out["comment"] = conn.execute(
            "SELECT col_description('features.track_daily'::regclass, attnum) FROM pg_attribute"
            " WHERE attrelid = 'features.track_daily'::regclass AND attname = %s",
            (COLUMN,),
        ).fetchone()[0]
        built = conn.execute(
            f"SELECT track_id, plays_7d, {COLUMN} FROM features.track_daily WHERE dt = %s",
            (day,),
        ).fetchall()
        expected = dict(
            conn.execute(
                "SELECT track_id, coalesce(sum(plays) FILTER (WHERE extract(isodow FROM dt)"
                " IN (6, 7)), 0)::float8 / nullif(sum(plays), 0)"
                " FROM features.track_activity_daily WHERE dt BETWEEN %s AND %s GROUP BY 1",
                (day - timedelta(days=6), day),
            ).fetchall()
        )
        out["catalogue"] = conn.execute(
            "SELECT count(DISTINCT track_id) FROM raw.track_versions WHERE dt <= %s", (day,)
        ).fetchone()[0]
    out["rows"] = {t: [plays, value, expected.get(t)] for t, plays, value in built}
    played = sorted(t for t, plays, _ in built if plays)[:20]
    online = feature_store.online_features(SERVICE, [{"track_id": t} for t in played], dsn=dsn)
    out["online"] = dict(zip(online["track_id"], online[COLUMN], strict=True))
    lap("checks and online features")

    dag = DagBag(dag_folder=os.environ["AIRFLOW__CORE__DAGS_FOLDER"]).get_dag(DAG_ID)
    for task in dag.tasks:  # a broken step fails at once instead of waiting out its retries
        task.retries = 0
    run = dag.test(
        logical_date=pendulum.datetime(day.year, day.month, day.day, tz="UTC") + timedelta(days=1)
    )
    lap("dag.test")
    with create_session() as session:
        events = (
            session.query(AssetEvent)
            .join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            .filter(AssetModel.name == ASSET, AssetEvent.source_run_id == run.run_id)
            .all()
        )
        out["run"] = {
            "state": str(run.state),
            "tasks": {ti.task_id: str(ti.state) for ti in run.get_task_instances()},
            "events": [[e.source_task_id, e.extra] for e in events],
        }
    out["models"] = [
        {"version": m.version, "status": m.status, "metrics": m.metrics, "gate": m.gate_report}
        for m in registry.models(FAMILY, dsn=dsn)
    ]
    close = pendulum.datetime(day.year, day.month, day.day, tz="UTC") + timedelta(days=1)
    champion = registry.champion(FAMILY, close, dsn=dsn)
    out["champion_at_close"] = champion.version if champion else None
    with warehouse.connect(dsn) as conn:
        out["training_runs"] = conn.execute(
            "SELECT status, version, error FROM ml.training_runs WHERE model_name = %s",
            (FAMILY,),
        ).fetchall()
    out["page"] = ui.read_overview(dsn)["families"].get(FAMILY)
    lap("registry and page")
    _answer(out)
