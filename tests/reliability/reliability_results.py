"""The reliability suite's results file, written as the tests run.

When ``ENCORE_RELIABILITY_REPORT`` names a file (``make reliability`` sets
``var/reliability.json``), every reliability test records its case there, section by
section: ``faults`` (SIGKILLed steps), ``bad_input`` (kinds of broken landing data) and
``properties`` (hypothesis runs over row contents). ``scripts/reliability_report.py``
renders the file as ``docs/reliability.md``.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPORT_ENV = "ENCORE_RELIABILITY_REPORT"

log = logging.getLogger(__name__)


def report_path() -> Path | None:
    out = os.environ.get(REPORT_ENV)
    return Path(out) if out else None


def _load(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    if not isinstance(data, dict):  # the old format (a list of fault runs): start afresh
        return {}
    return data


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One writer at a time (pytest-xdist workers share the file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def record(section: str, key: str, entry: dict[str, Any]) -> None:
    """Add (or replace, by ``key``) one case of ``section`` in the results file, if any."""
    path = report_path()
    if path is None:
        return
    with _locked(path):
        data = _load(path)
        cases = [c for c in data.get(section, []) if c.get("key") != key]
        cases.append({"key": key, **entry})
        data[section] = cases
        data.setdefault("started_at", datetime.now(UTC).isoformat(timespec="seconds"))
        data["updated_at"] = datetime.now(UTC).isoformat(timespec="seconds")
        _save(path, data)
    log.debug("recorded %s/%s in %s", section, key, path)


def record_setting(name: str, value: Any) -> None:
    """Note a setting the run used (kills per step, hypothesis examples...)."""
    path = report_path()
    if path is None:
        return
    with _locked(path):
        data = _load(path)
        data.setdefault("settings", {})[name] = value
        _save(path, data)


def _save(path: Path, data: dict[str, Any]) -> None:
    """Write atomically: a killed test never leaves half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str, ensure_ascii=False))
    tmp.replace(path)
