"""The encore command: the commands operators script, their output and their failures."""

from __future__ import annotations

import json

from ml_tasks import cli


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_monitor_flags_stream_fraud_for_a_day(world, world_dsn, capsys) -> None:
    day = world.last_day.isoformat()
    code, out, _ = run(capsys, "monitor", "--date", day, "--dsn", world_dsn)
    assert code == 0
    result = json.loads(out)
    assert result["day"] == day and result["fraud"]["scored"] > 0
    assert result["drift_columns"] == 0  # no churn champion in this world: nothing to watch
    assert result["report"].endswith(f"monitoring-{day}.html")


def test_features_build_and_validate_without_materializing(world, world_dsn, capsys) -> None:
    day = world.last_day.isoformat()
    code, out, _ = run(capsys, "features", "--date", day, "--dsn", world_dsn, "--skip-materialize")
    assert code == 0
    result = json.loads(out)
    assert result["rows"]["features.user_daily"] > 0
    assert set(result["validation"]) == {"features.user_daily", "features.track_daily"}
    assert "fraud" in result and "materialized" not in result


def test_scoring_an_unvalidated_day_fails_in_one_line(world, world_dsn, capsys) -> None:
    day = world.last_day.isoformat()
    code, out, err = run(capsys, "score", "--date", day, "--dsn", world_dsn)
    assert code == 1 and out == ""
    assert err.startswith("encore score: error: cannot score") and err.count("\n") == 1


def test_evaluate_without_a_model_says_so(world, world_dsn, capsys) -> None:
    code, _, err = run(
        capsys, "evaluate", "churn", "--date", world.last_day.isoformat(), "--dsn", world_dsn
    )
    assert code == 1 and "there is no champion" in err
