"""Retraining as ``retrain_nightly`` runs it: churn, popularity and genre at once.

``encore bench`` times the three trainers one after another, each in its own process, so
that each gets its own wall time and peak RSS. The DAG starts them together once the
features are validated (``wait_for_features >> [train_churn, train_genre,
train_popularity]``), and each trainer is mostly one thread, so on two cores their wall
time is less than the sum. This script measures that wall time on a world kept by
``encore bench --keep`` (it logs the database and folder it kept):

    python bench/retrain_together.py --dsn postgresql://.../encore_bench_xxx \\
        --work /tmp/encore-bench-xxx --date 2026-06-02

Each trainer runs as ``encore train FAMILY --date D`` in its own process, as the DAG's
tasks would on a worker. A trainer reuses the model trained on the same inputs, so the
script first removes the recorded input fingerprints of the world's models: run it on a
bench world only. The models the world holds are then the champions to beat, as on any
night after the first.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

import psycopg

FAMILIES = ("churn", "popularity", "genre")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", required=True, help="the kept bench database")
    parser.add_argument("--work", required=True, help="the kept bench folder")
    parser.add_argument("--date", required=True, help="training date (the night's day before)")
    args = parser.parse_args()
    work = Path(args.work)
    env = {
        **os.environ,
        "WAREHOUSE_DSN": args.dsn,
        "ENCORE_ARTIFACTS": str(work / "artifacts"),
        "ENCORE_LANDING_ROOT": str(work / "landing"),
    }
    with psycopg.connect(args.dsn, autocommit=True) as conn:
        conn.execute("UPDATE ml.model_registry SET metrics = metrics - 'inputs_sha256'")
    encore = str(Path(sys.executable).with_name("encore"))
    # each trainer's log goes to a file: a pipe read only at the end would fill and stall it
    logs = {f: work / f"together-{f}.log" for f in FAMILIES}
    seconds, failed = {}, {}
    with contextlib.ExitStack() as files:
        started = time.perf_counter()
        pending = {
            f: (
                subprocess.Popen(
                    [encore, "train", f, "--date", args.date, "--run-id", f"together-{f}"],
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=files.enter_context(logs[f].open("w")),
                ),
                time.perf_counter(),
            )
            for f in FAMILIES
        }
        while pending:
            for family, (proc, t0) in list(pending.items()):
                if proc.poll() is not None:
                    seconds[family] = time.perf_counter() - t0
                    if proc.returncode != 0:
                        failed[family] = logs[family].read_text()[-2000:]
                    del pending[family]
            time.sleep(0.5)
        wall = time.perf_counter() - started
    for family in FAMILIES:
        state = "failed" if family in failed else "ok"
        print(f"{family:<12} {seconds[family]:8.1f} s  {state}")
    print(f"{'together':<12} {wall:8.1f} s wall (each trainer's time above shares the cores)")
    print(f"logs: {work}/together-<family>.log")
    for family, err in failed.items():
        print(f"\n{family} failed:\n{err}", file=sys.stderr)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
