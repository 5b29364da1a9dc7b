"""Churn model settings, from ``config/churn.yaml`` (the path comes from settings)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from ml_tasks.settings import get_settings

CONFIG_FILE = "churn.yaml"
FAMILIES = ("xgboost", "lightgbm", "catboost")


class ChurnConfigError(ValueError):
    """config/churn.yaml is missing or inconsistent."""


@dataclass(frozen=True)
class WindowConfig:
    split_horizon: int = 30
    holdout_days: int = 7
    calibration_days: int = 7
    #: Horizons longer than split_horizon calibrate on their own dates: every
    #: ``late_calibration_stride``-th day of the ``late_calibration_days`` days ending on the
    #: latest date whose labels at that horizon are known.
    late_calibration_days: int = 7
    late_calibration_stride: int = 1
    lookback_days: int = 60
    stride_days: int = 2
    min_history_days: int = 14
    max_train_rows: int = 200_000


@dataclass(frozen=True)
class GbmConfig:
    n_estimators: int = 200
    learning_rate: float = 0.05
    max_depth: int = 4
    n_jobs: int = 2
    seed: int = 17


@dataclass(frozen=True)
class CalibrationConfig:
    method: str = "isotonic"
    #: Method for the horizons longer than the split horizon (default: ``method``).
    late_method: str | None = None
    min_rows: int = 200
    min_positives: int = 20


@dataclass(frozen=True)
class GateConfig:
    metric: str = "roc_auc"
    horizon: int = 30
    tolerance: float = 0.005
    max_ece: float = 0.03
    require_validated_features: bool = True


@dataclass(frozen=True)
class ChurnConfig:
    """Everything ``train_churn`` needs to know besides the day."""

    horizons: tuple[int, ...] = (7, 30, 90)
    band_edges: tuple[int, ...] = (7, 14, 21, 30, 45, 60, 75, 90)
    feature_service: str = "churn_v1"
    window: WindowConfig = field(default_factory=WindowConfig)
    families: tuple[str, ...] = FAMILIES
    gbm: GbmConfig = field(default_factory=GbmConfig)
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    baseline_features: tuple[str, ...] = (
        "days_since_last_play",
        "plays_7d",
        "plays_30d",
        "active_days_7d",
        "active_days_30d",
        "current_streak_days",
        "is_paying",
    )
    gate: GateConfig = field(default_factory=GateConfig)

    def __post_init__(self) -> None:
        if list(self.band_edges) != sorted(set(self.band_edges)) or self.band_edges[0] < 1:
            raise ChurnConfigError("band_edges must be increasing positive day counts")
        missing = [h for h in self.horizons if h not in self.band_edges]
        if missing:
            raise ChurnConfigError(f"horizons {missing} are not band edges {self.band_edges}")
        if self.band_edges[-1] != max(self.horizons):
            raise ChurnConfigError("the last band edge must be the largest horizon")
        unknown = sorted(set(self.families) - set(FAMILIES))
        if unknown or not self.families:
            raise ChurnConfigError(f"families must be a non-empty subset of {FAMILIES}")
        if self.gate.metric not in ("roc_auc", "pr_auc"):
            raise ChurnConfigError("gate.metric must be roc_auc or pr_auc")
        if self.gate.horizon not in self.horizons:
            raise ChurnConfigError("gate.horizon must be one of the horizons")
        if self.calibration.method not in ("isotonic", "platt"):
            raise ChurnConfigError("calibration.method must be isotonic or platt")
        if self.calibration.late_method not in (None, "isotonic", "platt"):
            raise ChurnConfigError("calibration.late_method must be isotonic or platt")
        w = self.window
        if (
            w.late_calibration_days < 1
            or not 1 <= w.late_calibration_stride <= w.late_calibration_days
        ):
            raise ChurnConfigError(
                "window.late_calibration_days must be >= 1 and late_calibration_stride"
                " between 1 and late_calibration_days"
            )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ChurnConfig:
        data = dict(data or {})
        kwargs: dict[str, Any] = {}
        for key in ("horizons", "band_edges", "families", "baseline_features"):
            if key in data:
                kwargs[key] = tuple(data.pop(key))
        sections = {
            "window": WindowConfig,
            "gbm": GbmConfig,
            "calibration": CalibrationConfig,
            "gate": GateConfig,
        }
        for key, kind in sections.items():
            if key in data:
                try:
                    kwargs[key] = kind(**(data.pop(key) or {}))
                except TypeError as exc:
                    raise ChurnConfigError(f"{CONFIG_FILE} [{key}]: {exc}") from exc
        if "feature_service" in data:
            kwargs["feature_service"] = str(data.pop("feature_service"))
        if data:
            raise ChurnConfigError(f"{CONFIG_FILE}: unknown keys {sorted(data)}")
        return cls(**kwargs)

    @classmethod
    def load(cls, path: Path | None = None) -> ChurnConfig:
        """Read ``config/churn.yaml`` (or ``path``)."""
        path = path or get_settings().config_dir / CONFIG_FILE
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ChurnConfigError(f"churn config {path} not found") from exc
        return cls.from_dict(data)

    def with_overrides(self, **sections: dict[str, Any]) -> ChurnConfig:
        """A copy with some fields of sections replaced (tests, experiments)."""
        changes: dict[str, Any] = {}
        for key, values in sections.items():
            current = getattr(self, key)
            changes[key] = replace(current, **values) if isinstance(values, dict) else values
        return replace(self, **changes)
