"""Popularity model settings, from ``config/popularity.yaml`` (the path comes from settings)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from ml_tasks.settings import get_settings

CONFIG_FILE = "popularity.yaml"
FAMILIES = ("lightgbm", "lstm")
HORIZONS = (1, 7, 30)
OBJECTIVES = ("tweedie", "l2_log1p")


class PopularityConfigError(ValueError):
    """config/popularity.yaml is missing or inconsistent."""


@dataclass(frozen=True)
class WindowConfig:
    holdout_days: int = 7
    lookback_days: int = 90
    stride_days: int = 1
    min_history_days: int = 14
    min_train_dates: int = 5
    max_train_rows: int = 300_000
    new_release_days: int = 14


@dataclass(frozen=True)
class LightGbmConfig:
    objective: str = "tweedie"
    tweedie_variance_power: float = 1.2
    n_estimators: int = 300
    learning_rate: float = 0.05
    num_leaves: int = 31
    min_child_samples: int = 20
    subsample: float = 0.8
    colsample_bytree: float = 0.8
    n_jobs: int = 1
    seed: int = 17


@dataclass(frozen=True)
class LstmConfig:
    units: int = 32
    dense_units: int = 32
    epochs: int = 12
    batch_size: int = 256
    learning_rate: float = 0.003
    threads: int = 1
    seed: int = 17
    #: Rows the LSTM trains on per horizon at most (a sample of the horizon's training
    #: rows; None: all of them). Its cost is per sample and epoch, unlike LightGBM's.
    max_train_rows: int | None = None
    #: When the horizon has more training rows than ``max_train_rows``: hold out its latest
    #: ``validation_share × max_train_rows`` rows (by date, none of them fitted) and stop
    #: once their WAPE has not improved for this many epochs, keeping the best epoch's
    #: weights (0: run every epoch, hold nothing out).
    patience: int = 0
    validation_share: float = 0.2


@dataclass(frozen=True)
class GateConfig:
    horizon: int = 7
    tolerance: float = 0.01
    max_naive_ratio: float = 1.0
    require_validated_features: bool = True


@dataclass(frozen=True)
class PopularityConfig:
    """Everything ``train_popularity`` needs to know besides the day."""

    horizons: tuple[int, ...] = HORIZONS
    feature_service: str = "popularity_v1"
    sequence_days: int = 30
    window: WindowConfig = field(default_factory=WindowConfig)
    families: tuple[str, ...] = FAMILIES
    blend: bool = True
    #: Fit the families at once, one thread each (each family's fit is single-threaded).
    families_together: bool = True
    lightgbm: LightGbmConfig = field(default_factory=LightGbmConfig)
    lstm: LstmConfig = field(default_factory=LstmConfig)
    gate: GateConfig = field(default_factory=GateConfig)

    def __post_init__(self) -> None:
        if tuple(sorted(self.horizons)) != HORIZONS:
            raise PopularityConfigError(
                f"horizons must be {list(HORIZONS)} (the columns of scores.track_popularity)"
            )
        if self.sequence_days < max(self.horizons):
            raise PopularityConfigError(
                "sequence_days must cover the longest horizon (its naive baseline)"
            )
        unknown = sorted(set(self.families) - set(FAMILIES))
        if unknown or not self.families:
            raise PopularityConfigError(f"families must be a non-empty subset of {FAMILIES}")
        if self.lightgbm.objective not in OBJECTIVES:
            raise PopularityConfigError(f"lightgbm.objective must be one of {OBJECTIVES}")
        if self.gate.horizon not in self.horizons:
            raise PopularityConfigError("gate.horizon must be one of the horizons")
        if self.window.holdout_days < 1 or self.window.min_train_dates < 1:
            raise PopularityConfigError("holdout_days and min_train_dates must be positive")
        if self.lstm.max_train_rows is not None and self.lstm.max_train_rows < 1:
            raise PopularityConfigError("lstm.max_train_rows must be positive (or null: all)")
        if self.lstm.patience < 0 or not 0.0 < self.lstm.validation_share <= 1.0:
            raise PopularityConfigError(
                "lstm.patience must be >= 0 and lstm.validation_share in (0, 1]"
            )
        if self.lstm.patience and self.lstm.max_train_rows is None:
            raise PopularityConfigError(
                "lstm.patience needs lstm.max_train_rows: early stopping holds out rows"
                " beyond that cap"
            )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PopularityConfig:
        data = dict(data or {})
        kwargs: dict[str, Any] = {}
        for key in ("horizons", "families"):
            if key in data:
                kwargs[key] = tuple(data.pop(key))
        sections = {
            "window": WindowConfig,
            "lightgbm": LightGbmConfig,
            "lstm": LstmConfig,
            "gate": GateConfig,
        }
        for key, kind in sections.items():
            if key in data:
                try:
                    kwargs[key] = kind(**(data.pop(key) or {}))
                except TypeError as exc:
                    raise PopularityConfigError(f"{CONFIG_FILE} [{key}]: {exc}") from exc
        for key, kind in (
            ("feature_service", str),
            ("sequence_days", int),
            ("blend", bool),
            ("families_together", bool),
        ):
            if key in data:
                kwargs[key] = kind(data.pop(key))
        if data:
            raise PopularityConfigError(f"{CONFIG_FILE}: unknown keys {sorted(data)}")
        return cls(**kwargs)

    @classmethod
    def load(cls, path: Path | None = None) -> PopularityConfig:
        """Read ``config/popularity.yaml`` (or ``path``)."""
        path = path or get_settings().config_dir / CONFIG_FILE
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise PopularityConfigError(f"popularity config {path} not found") from exc
        return cls.from_dict(data)

    def with_overrides(self, **sections: Any) -> PopularityConfig:
        """A copy with some fields of sections replaced (tests, experiments)."""
        changes: dict[str, Any] = {}
        for key, values in sections.items():
            current = getattr(self, key)
            changes[key] = replace(current, **values) if isinstance(values, dict) else values
        return replace(self, **changes)
