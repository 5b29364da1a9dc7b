"""Retention interventions: the best one per user, then a daily budget allocated by value.

For a user and intervention: expected net value = P(churn) x value at risk (by plan) x
uplift (by intervention and segment) - cost. Each user gets the eligible intervention with
the highest positive net value (or none); the day's budget then goes greedily to the users
with the highest net values, skipping any whose cost no longer fits. The catalogue is
``config/interventions.yaml``; its sha256 is recorded with every plan.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from ml_tasks import contract
from ml_tasks.settings import get_settings

log = logging.getLogger(__name__)

SEGMENTS = ("heavy", "moderate", "light")
ELIGIBILITY = ("all", "paying", "free")


class CatalogueError(ValueError):
    """The intervention catalogue is unusable; the message names the problem."""


@dataclass(frozen=True)
class Intervention:
    """One kind of intervention with its cost and assumed uplift per segment."""

    name: str
    cost: float
    description: str
    eligible_plans: str
    uplift: dict[str, float]

    def eligible(self, is_paying: np.ndarray) -> np.ndarray:
        if self.eligible_plans == "paying":
            return is_paying
        if self.eligible_plans == "free":
            return ~is_paying
        return np.ones(len(is_paying), dtype=bool)


@dataclass(frozen=True)
class Catalogue:
    """The intervention catalogue and the daily budget."""

    daily_budget: float
    value_at_risk: dict[str, float]
    interventions: tuple[Intervention, ...]
    version: str


def _number(value: object, where: str, minimum: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise CatalogueError(f"{where} must be a number, got {value!r}")
    if value < minimum:
        raise CatalogueError(f"{where} must be >= {minimum}, got {value}")
    return float(value)


def load_catalogue(path: Path | None = None) -> Catalogue:
    """Read and check the catalogue (default ``config/interventions.yaml``)."""
    path = path or get_settings().config_dir / "interventions.yaml"
    try:
        raw = path.read_bytes()
        doc = yaml.safe_load(raw)
    except (OSError, yaml.YAMLError) as exc:
        raise CatalogueError(f"cannot read intervention catalogue {path}: {exc}") from exc
    if not isinstance(doc, dict):
        raise CatalogueError(f"{path}: expected a mapping at the top level")
    where = path.name
    budget = _number(doc.get("daily_budget"), f"{where}: daily_budget")
    var = doc.get("value_at_risk") or {}
    missing = [p for p in contract.PLANS if p not in var]
    if missing:
        raise CatalogueError(f"{where}: value_at_risk has no value for plan(s) {missing}")
    value_at_risk = {p: _number(var[p], f"{where}: value_at_risk.{p}") for p in contract.PLANS}
    items = []
    for name, spec in (doc.get("interventions") or {}).items():
        spec = spec or {}
        eligible = spec.get("eligible_plans", "all")
        if eligible not in ELIGIBILITY:
            raise CatalogueError(
                f"{where}: {name}.eligible_plans must be one of {ELIGIBILITY}, got {eligible!r}"
            )
        uplift = spec.get("uplift") or {}
        absent = [s for s in SEGMENTS if s not in uplift]
        if absent:
            raise CatalogueError(f"{where}: {name}.uplift has no value for segment(s) {absent}")
        items.append(
            Intervention(
                name=name,
                cost=_number(spec.get("cost"), f"{where}: {name}.cost"),
                description=str(spec.get("description", "")),
                eligible_plans=eligible,
                uplift={s: _number(uplift[s], f"{where}: {name}.uplift.{s}") for s in SEGMENTS},
            )
        )
    if not items:
        raise CatalogueError(f"{where}: no interventions defined")
    for item in items:
        if any(u > 1 for u in item.uplift.values()):
            raise CatalogueError(f"{where}: {item.name}.uplift values are shares (<= 1)")
    return Catalogue(budget, value_at_risk, tuple(items), hashlib.sha256(raw).hexdigest()[:12])


def plan_interventions(users: pd.DataFrame, catalogue: Catalogue) -> pd.DataFrame:
    """Recommend and budget interventions.

    ``users`` has ``user_id``, ``p_churn``, ``plan``, ``is_paying`` and ``segment``. Returns
    one row per user: ``intervention`` (or None), ``selected``, ``budget_rank``,
    ``value_at_risk``, ``uplift``, ``cost``, ``expected_net_value`` and ``reason``.
    """
    n = len(users)
    unknown_segments = set(users["segment"].unique()) - set(SEGMENTS)
    if unknown_segments:
        raise CatalogueError(f"users with unknown segment(s) {sorted(unknown_segments)}")
    p = users["p_churn"].to_numpy(dtype=float)
    paying = users["is_paying"].to_numpy(dtype=bool)
    segment = users["segment"].to_numpy()
    var = users["plan"].map(catalogue.value_at_risk).to_numpy(dtype=float)
    if np.isnan(var).any():
        bad = sorted(set(users["plan"][np.isnan(var)]))
        raise CatalogueError(f"users with plan(s) the catalogue has no value for: {bad}")

    k = len(catalogue.interventions)
    net = np.full((n, k), -np.inf)
    uplifts = np.zeros((n, k))
    for j, item in enumerate(catalogue.interventions):
        uplift = np.select([segment == s for s in SEGMENTS], [item.uplift[s] for s in SEGMENTS])
        uplifts[:, j] = uplift
        value = p * var * uplift - item.cost
        net[:, j] = np.where(item.eligible(paying), value, -np.inf)
    best = np.argmax(net, axis=1)
    rows = np.arange(n)
    best_net = net[rows, best]
    positive = best_net > 0
    costs = np.array([item.cost for item in catalogue.interventions])
    names = np.array([item.name for item in catalogue.interventions], dtype=object)

    # greedy by net value: take each in turn if its cost still fits the budget
    order = np.flatnonzero(positive)[np.argsort(-best_net[positive], kind="stable")]
    rank = np.full(n, -1, dtype=np.int64)
    rank[order] = np.arange(1, len(order) + 1)
    selected = np.zeros(n, dtype=bool)
    remaining = catalogue.daily_budget
    cheapest = costs.min()
    for i in order:
        if remaining < cheapest:
            break
        cost = costs[best[i]]
        if cost <= remaining:
            selected[i] = True
            remaining -= cost

    chosen_cost = np.where(positive, costs[best], np.nan)
    chosen_uplift = np.where(positive, uplifts[rows, best], np.nan)
    reasons = []
    for i in range(n):
        if not positive[i]:
            eligible = np.isfinite(net[i])
            top = int(np.argmax(np.where(eligible, net[i], -np.inf)))
            reasons.append(
                f"no intervention pays off: best is {names[top]} at"
                f" {p[i]:.3f} x ${var[i]:.2f} x {uplifts[i, top]:.2f} - ${costs[top]:.2f}"
                f" = ${net[i, top]:.2f}"
            )
            continue
        j = best[i]
        arithmetic = (
            f"{names[j]}: {p[i]:.3f} x ${var[i]:.2f} x {uplifts[i, j]:.2f} - ${costs[j]:.2f}"
            f" = ${best_net[i]:.2f}"
        )
        if selected[i]:
            reasons.append(f"{arithmetic}; in budget (rank {rank[i]})")
        else:
            reasons.append(f"{arithmetic}; budget exhausted before rank {rank[i]}")
    log.info(
        "interventions: %d of %d users with a positive one, %d selected for $%.2f of $%.2f",
        int(positive.sum()),
        n,
        int(selected.sum()),
        catalogue.daily_budget - remaining,
        catalogue.daily_budget,
    )
    return pd.DataFrame(
        {
            "user_id": users["user_id"].to_numpy(),
            "intervention": np.where(positive, names[best], None),
            "selected": selected,
            "budget_rank": pd.array([int(r) if r > 0 else None for r in rank], dtype="Int64"),
            "p_churn": p,
            "value_at_risk": var,
            "uplift": chosen_uplift,
            "cost": chosen_cost,
            "expected_net_value": np.where(positive, best_net, np.nan),
            "reason": reasons,
        }
    )
