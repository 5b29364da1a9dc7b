"""Intervention choice and budget allocation, on hand-made users with known answers."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from ml_tasks.interventions import (
    Catalogue,
    CatalogueError,
    Intervention,
    load_catalogue,
    plan_interventions,
)

FLAT = {"heavy": 0.1, "moderate": 0.1, "light": 0.1}


def catalogue(budget: float) -> Catalogue:
    return Catalogue(
        daily_budget=budget,
        value_at_risk={
            "free": 10.0,
            "premium_individual": 100.0,
            "premium_duo": 100.0,
            "premium_family": 100.0,
            "premium_student": 100.0,
        },
        interventions=(
            Intervention("cheap", 2.0, "", "all", FLAT),
            Intervention(
                "offer", 10.0, "", "paying", {"heavy": 0.5, "moderate": 0.5, "light": 0.5}
            ),
            Intervention("upsell", 1.0, "", "free", {"heavy": 0.9, "moderate": 0.9, "light": 0.9}),
        ),
        version="test",
    )


def users(rows: list[tuple[int, float, str, str]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["user_id", "p_churn", "plan", "segment"])
    frame["is_paying"] = frame["plan"] != "free"
    return frame


def test_best_positive_intervention_per_user_respects_eligibility() -> None:
    plan = plan_interventions(
        users(
            [
                (1, 0.5, "premium_individual", "heavy"),  # offer: .5*100*.5-10 = 15
                (2, 0.1, "premium_individual", "light"),  # cheap: 1-2 <0; offer: 5-10 <0
                (3, 0.5, "free", "moderate"),  # upsell: .5*10*.9-1 = 3.5 (no offer)
                (4, 0.3, "premium_duo", "moderate"),  # cheap 1; offer 5 -> offer
            ]
        ),
        catalogue(budget=1000),
    ).set_index("user_id")
    assert plan.loc[1, "intervention"] == "offer"
    assert plan.loc[1, "expected_net_value"] == pytest.approx(15.0)
    assert plan.loc[2, "intervention"] is None and not plan.loc[2, "selected"]
    assert "no intervention pays off" in plan.loc[2, "reason"]
    assert plan.loc[3, "intervention"] == "upsell"
    assert plan.loc[3, "expected_net_value"] == pytest.approx(3.5)
    assert plan.loc[4, "intervention"] == "offer"
    assert plan.loc[4, "expected_net_value"] == pytest.approx(5.0)
    assert list(plan.loc[[1, 4, 3], "budget_rank"]) == [1, 2, 3]
    assert plan["selected"].sum() == 3
    assert (
        plan.loc[1, "reason"]
        == "offer: 0.500 x $100.00 x 0.50 - $10.00 = $15.00; in budget (rank 1)"
    )


def test_budget_goes_greedily_by_value_skipping_what_no_longer_fits() -> None:
    plan = plan_interventions(
        users(
            [
                (1, 0.6, "premium_individual", "heavy"),  # offer 20, cost 10
                (2, 0.5, "premium_individual", "heavy"),  # offer 15, cost 10
                (3, 0.5, "free", "heavy"),  # upsell 3.5, cost 1
            ]
        ),
        catalogue(budget=12),
    ).set_index("user_id")
    assert list(plan["selected"]) == [True, False, True]
    assert "budget exhausted before rank 2" in plan.loc[2, "reason"]
    spent = plan.loc[plan["selected"], "cost"].sum()
    assert spent == 11.0


def test_the_shipped_catalogue_loads(tmp_path: Path) -> None:
    shipped = load_catalogue()
    assert shipped.daily_budget > 0 and len(shipped.interventions) == 4
    names = {i.name for i in shipped.interventions}
    assert {"retention_offer", "premium_upsell"} <= names
    assert len(shipped.version) == 12


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("daily_budget: 10\nvalue_at_risk: {free: 1}\ninterventions: {}", "no value for plan"),
        (
            "daily_budget: -1\nvalue_at_risk: {}\ninterventions: {}",
            "daily_budget must be >= 0",
        ),
        ("[1, 2]", "expected a mapping"),
        ("daily_budget: [oops", "cannot read intervention catalogue"),
    ],
)
def test_a_broken_catalogue_is_refused_with_the_problem_named(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "interventions.yaml"
    path.write_text(text)
    with pytest.raises(CatalogueError, match=message):
        load_catalogue(path)


def test_unknown_plan_or_segment_is_refused() -> None:
    with pytest.raises(CatalogueError, match="unknown segment"):
        plan_interventions(users([(1, 0.5, "free", "extreme")]), catalogue(10))
    with pytest.raises(CatalogueError, match="no value for"):
        plan_interventions(users([(1, 0.5, "platinum", "heavy")]), catalogue(10))
