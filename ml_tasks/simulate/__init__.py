"""The Encore data simulator: a synthetic music-streaming world written as landing files.

:func:`simulate_world` writes the four landing datasets (per DATA_CONTRACT.md), preview
clips, and a separate ground-truth folder (hazards, churn, bots, true genres, bad rows).
"""

from __future__ import annotations

from ml_tasks.simulate.bad_rows import KINDS as BAD_KINDS
from ml_tasks.simulate.catalogue import GENRES
from ml_tasks.simulate.core import SimulationSummary, simulate_world

__all__ = ["BAD_KINDS", "GENRES", "SimulationSummary", "simulate_world"]
