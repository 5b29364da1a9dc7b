"""Render the reliability suite's results (``var/reliability.json``) as ``docs/reliability.md``.

``make reliability`` runs ``tests/reliability`` with ``ENCORE_RELIABILITY_REPORT`` set, so
every case records itself (``tests/reliability/reliability_results.py``), then runs this
script. The page says what ran (runs, kills, cases, rows) and what held; it is generated,
never edited by hand.

    python scripts/reliability_report.py [--input var/reliability.json]
                                         [--output docs/reliability.md]
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
log = logging.getLogger("encore.reliability_report")

OUTCOMES = {
    "quarantine": "broken rows quarantined with their reasons, the rest loaded",
    "refuse": "the day refused with a clear error, nothing of it loaded",
    "accept": "odd but lawful: every row loaded",
}


def _held(cases: list[dict]) -> str:
    good = sum(1 for c in cases if c.get("held"))
    return f"{good}/{len(cases)}"


def _mark(ok: bool) -> str:
    return "held" if ok else "**FAILED**"


def _cell(text: Any, limit: int = 160) -> str:
    """Text for a Markdown table cell: one line, pipes escaped, long text cut."""
    value = " ".join(str(text).split())
    if len(value) > limit:
        value = value[: limit - 1] + "…"
    return value.replace("|", "\\|")


def _commit() -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{head} (with uncommitted changes)" if dirty else head


# --------------------------------------------------------------------------- sections


def faults_section(faults: list[dict], kills_per_step: Any) -> list[str]:
    if not faults:
        return ["## Killed steps", "", "_Not run._", ""]
    lines = [
        "## Killed steps (SIGKILL at random points)",
        "",
        "Each step first runs cleanly on a scored simulated world; its tables' checksums are"
        " the reference. Then it is started again and SIGKILLed after a seeded random delay"
        " while a reader checks the day's row counts; the killed run must leave the reference"
        " state and a final clean run must converge to it."
        f" Kills per step: {kills_per_step}.",
        "",
        "| step | clean run (s) | runs | kills | killed mid-run | finished before the kill"
        " | rows checked | held |",
        "|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for f in faults:
        kills = f.get("kills", [])
        killed = sum(1 for k in kills if k.get("outcome") == "killed")
        rows = ", ".join(f"{t} {n:,}" for t, n in f.get("rows", {}).items())
        lines.append(
            f"| {f['step']} | {f.get('clean_seconds', '')} | {f.get('clean_runs', 0) + len(kills)}"
            f" | {len(kills)} | {killed} | {len(kills) - killed} | {_cell(rows, 220)}"
            f" | {_mark(bool(f.get('held')))} |"
        )
    lines.append("")
    return lines


def bad_input_section(cases: list[dict]) -> list[str]:
    if not cases:
        return ["## Bad landing data", "", "_Not run._", ""]
    lines = [
        "## Bad landing data",
        "",
        f"{len(cases)} kinds of broken landing data (`tests/reliability/bad_input.py`), each"
        " ingested through `ml_tasks.ingest.ingest_day` (the `encore ingest` path) into a real"
        " PostgreSQL; clips through `ml_tasks.audio.extract_day`. For every loaded day, per"
        " file: rows read = accepted + quarantined, and the raw and quarantined rows are"
        " exactly the file's rows. Refused days are checked against checksums of every"
        " warehouse table taken before (a good earlier version of the day must survive).",
        "",
    ]
    by_outcome: dict[str, list[dict]] = {}
    for case in cases:
        by_outcome.setdefault(case.get("expected", "?"), []).append(case)
    for outcome in ("quarantine", "refuse", "accept"):
        group = by_outcome.get(outcome, [])
        if not group:
            continue
        lines += [f"### {outcome}: {OUTCOMES[outcome]} ({_held(group)} held)", ""]
        if outcome == "refuse":
            lines += [
                "| kind | dataset | error (paths relative to the landing root)"
                " | rows kept | held |",
                "|---|---|---|---:|---|",
            ]
            for c in group:
                error = _cell(c.get("error", c.get("failure", "")), 200)
                lines.append(
                    f"| `{c['kind']}` | {c['dataset']} | {error}"
                    f" | {c.get('rows_kept', '')} | {_mark(bool(c.get('held')))} |"
                )
        else:
            lines += [
                "| kind | what | read | accepted | quarantined | reasons | held |",
                "|---|---|---:|---:|---:|---|---|",
            ]
            for c in group:
                reasons = c.get("reasons", [])
                if c.get("audio_reasons"):
                    reasons = [*reasons, *(f"audio: {r}" for r in c["audio_reasons"])]
                shown = "; ".join(reasons) if reasons else "—"
                if not c.get("held"):
                    shown = f"failure: {c.get('failure', '')}"
                lines.append(
                    f"| `{c['kind']}` | {_cell(c.get('description', ''), 120)}"
                    f" | {c.get('rows_read', '')} | {c.get('rows_accepted', '')}"
                    f" | {c.get('rows_quarantined', '')} | {_cell(shown, 240)}"
                    f" | {_mark(bool(c.get('held')))} |"
                )
        lines.append("")
    return lines


#: Sections other parts of the suite record, with a title (rendered generically).
OTHER_SECTIONS = {
    "concurrency": "Concurrent runs (`test_concurrency.py`)",
    "idempotency": "Re-runs through Airflow (`test_idempotency.py`)",
}
KNOWN = ("faults", "bad_input", "properties")


def _rows(case: dict) -> int:
    rows = case.get("rows", 0)
    if isinstance(rows, dict):
        return sum(v for v in rows.values() if isinstance(v, int))
    return rows if isinstance(rows, int) else 0


def other_section(section: str, cases: list[dict]) -> list[str]:
    """A section recorded by another reliability test: one row per case."""
    lines = [
        f"## {OTHER_SECTIONS.get(section, section)}",
        "",
        "| case | runs | rows | seconds | held |",
        "|---|---:|---:|---:|---|",
    ]
    for c in cases:
        what = c.get("case") or c.get("dag") or c.get("key", "")
        lines.append(
            f"| {_cell(what)} | {c.get('runs', 1)} | {_rows(c):,} | {c.get('seconds', '')}"
            f" | {_mark(bool(c.get('held')))} |"
        )
    lines.append("")
    return lines


def properties_section(props: list[dict], examples: Any) -> list[str]:
    if not props:
        return ["## Properties over row contents", "", "_Not run._", ""]
    lines = [
        "## Properties over row contents (hypothesis)",
        "",
        "Generated batches mix lawful values with random unicode (control characters, NUL,"
        " 60 kB strings), numbers (NaN, infinities, overflow), timestamps at any offset or"
        " malformed, enum look-alikes and nulls, as CSV text or typed Parquet columns. Every"
        " row must be accepted or rejected (never both, never neither), every rejected row"
        " must carry a reason and a payload jsonb can hold, and every accepted row must pass"
        " an independent oracle of the contract."
        f" Examples per property: {examples}.",
        "",
        "| property | examples | rows read | accepted | quarantined | held |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for p in props:
        lines.append(
            f"| {p['property']} | {p.get('examples', 0)} | {p.get('rows_read', 0):,}"
            f" | {p.get('rows_accepted', 0):,} | {p.get('rows_quarantined', 0):,}"
            f" | {_mark(bool(p.get('held')))} |"
        )
    lines.append("")
    return lines


def render(data: dict) -> str:
    """The Markdown page for a results file's contents."""
    faults = data.get("faults", [])
    cases = data.get("bad_input", [])
    props = data.get("properties", [])
    settings = data.get("settings", {})
    kills = sum(len(f.get("kills", [])) for f in faults)
    killed = sum(1 for f in faults for k in f.get("kills", []) if k.get("outcome") == "killed")
    fault_runs = sum(f.get("clean_runs", 0) + len(f.get("kills", [])) for f in faults)
    fault_rows = sum(sum(f.get("rows", {}).values()) for f in faults)
    outcomes = Counter(c.get("expected") for c in cases)
    case_runs = sum(c.get("runs", 1) for c in cases)
    read = sum(c.get("rows_read", 0) for c in cases)
    accepted = sum(c.get("rows_accepted", 0) for c in cases)
    quarantined = sum(c.get("rows_quarantined", 0) for c in cases)
    examples = sum(p.get("examples", 0) for p in props)
    prop_rows = sum(p.get("rows_read", 0) for p in props)
    loaded = [c for c in cases if c.get("expected") != "refuse"]
    refused = [c for c in cases if c.get("expected") == "refuse"]
    others = {
        name: value
        for name, value in data.items()
        if name not in KNOWN and isinstance(value, list) and value
    }
    everything = faults + cases + props + [c for group in others.values() for c in group]
    verdict = (
        "Everything held."
        if all(c.get("held") for c in everything)
        else ("**Some promises did not hold: see the FAILED rows below.**")
    )
    when = data.get("updated_at") or datetime.now(UTC).isoformat(timespec="seconds")
    lines = [
        "# Reliability report",
        "",
        "<!-- Generated by `make reliability` (scripts/reliability_report.py from"
        " var/reliability.json). Do not edit by hand. -->",
        "",
        f"Run finished {when} on commit {_commit()}. {verdict}",
        "",
        "| part | cases | runs | kills | rows | held |",
        "|---|---:|---:|---:|---|---|",
        f"| SIGKILLed steps (`test_faults.py`) | {len(faults)} steps | {fault_runs} | {kills}"
        f" ({killed} mid-run) | {fault_rows:,} reference rows checked after every kill"
        f" | {_held(faults)} |",
        f"| Bad landing data (`test_bad_input.py`) | {len(cases)} kinds"
        f" ({outcomes['quarantine']} quarantine, {outcomes['refuse']} refuse,"
        f" {outcomes['accept']} accept) | {case_runs} | — | {read:,} read, {accepted:,} accepted,"
        f" {quarantined:,} quarantined | {_held(cases)} |",
        f"| Row properties (`test_row_properties.py`) | {len(props)} properties, {examples:,}"
        f" examples | {examples:,} | — | {prop_rows:,} generated rows | {_held(props)} |",
        *(
            f"| {OTHER_SECTIONS.get(name, name)} | {len(group)} cases"
            f" | {sum(c.get('runs', 1) for c in group)} | — | {sum(map(_rows, group)):,} rows"
            f" | {_held(group)} |"
            for name, group in others.items()
        ),
        "",
        "## What held",
        "",
        f"- A killed step never showed a reader a partial day and left the day as it was;"
        f" a re-run converged: {_held(faults)} steps, {kills} kills.",
        f"- Nothing silently lost: every row of every loaded bad day was accepted or"
        f" quarantined with a reason, per file: {_held(loaded)} kinds.",
        f"- Clear errors, nothing half-loaded: every refused day named the file and the"
        f" problem, and the warehouse was unchanged: {_held(refused)} kinds.",
        f"- Random row contents: accepted + quarantined = read, every quarantined row has a"
        f" reason, every accepted row satisfies the contract: {_held(props)} properties.",
        *(
            f"- {OTHER_SECTIONS.get(name, name)}: {_held(group)} cases."
            for name, group in others.items()
        ),
        "",
    ]
    lines += faults_section(faults, settings.get("fault_kills_per_step", "?"))
    for name, group in others.items():
        lines += other_section(name, group)
    lines += bad_input_section(cases)
    lines += properties_section(props, settings.get("hypothesis_examples", "?"))
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", type=Path, default=ROOT / "var" / "reliability.json")
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "reliability.md")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        data = json.loads(args.input.read_text())
    except FileNotFoundError:
        log.error("no results at %s: run the suite with ENCORE_RELIABILITY_REPORT set", args.input)
        return 1
    if not isinstance(data, dict):
        log.error("%s is not a reliability results file (expected a JSON object)", args.input)
        return 1
    args.output.write_text(render(data))
    log.info("wrote %s", args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
