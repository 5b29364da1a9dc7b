"""Flat YAML settings files of ``config/`` read into frozen dataclasses."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import yaml

from ml_tasks.settings import get_settings

T = TypeVar("T")


def load_flat(cls: type[T], name: str, path: Path | None = None) -> T:
    """``cls(**settings)`` from ``config/<name>`` (or ``path``); unknown keys are refused."""
    path = path or get_settings().config_dir / name
    doc = yaml.safe_load(path.read_text()) or {}
    if not isinstance(doc, dict):
        raise ValueError(f"{path.name}: expected a mapping of settings")
    unknown = set(doc) - set(cls.__dataclass_fields__)  # type: ignore[attr-defined]
    if unknown:
        raise ValueError(f"{path.name}: unknown setting(s) {sorted(unknown)}")
    return cls(**doc)
