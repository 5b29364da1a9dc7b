"""Ground truth the platform never sees: hazards, churn, bots, true genres, bad rows."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ml_tasks.contract import PLANS
from ml_tasks.simulate.catalogue import GENRES, Catalogue
from ml_tasks.simulate.population import FREE, Population
from ml_tasks.simulate.tables import dates_from_ordinals
from ml_tasks.simulate.world import DayResult

#: The contract's dormancy window: no play in the 30 days starting at the churn day.
DORMANCY_DAYS = 30

BAD_ROWS_SCHEMA = pa.schema(
    [
        ("dataset", pa.string()),
        ("dt", pa.date32()),
        ("file", pa.string()),
        ("row_number", pa.int64()),
        ("row_key", pa.string()),
        ("kind", pa.string()),
    ]
)
UNKNOWN_REFS_SCHEMA = pa.schema(
    [
        ("dt", pa.date32()),
        ("file", pa.string()),
        ("row_number", pa.int64()),
        ("event_id", pa.string()),
        ("kind", pa.string()),
    ]
)


def _dates(start: dt.date, offsets: np.ndarray) -> pa.Array:
    return dates_from_ordinals(start.toordinal() + np.asarray(offsets, dtype=np.int64))


@dataclass
class TruthRecorder:
    """Collects the truth day by day and writes it at the end."""

    pop: Population
    cat: Catalogue
    start: dt.date
    days: int
    #: World days before ``start`` (a burn-in): the world's day t is recorded as t - offset.
    offset: int = 0
    _daily: list[dict[str, np.ndarray]] = field(default_factory=list)
    _cancels: list[tuple[np.ndarray, int, np.ndarray]] = field(default_factory=list)
    _latent: list[tuple[np.ndarray, int]] = field(default_factory=list)
    _bad: dict[str, list] = field(default_factory=lambda: {k: [] for k in BAD_ROWS_SCHEMA.names})
    _unknown: dict[str, list] = field(
        default_factory=lambda: {k: [] for k in UNKNOWN_REFS_SCHEMA.names}
    )

    def __post_init__(self) -> None:
        self.played = np.zeros((self.pop.n, self.days), dtype=bool)
        self.free_end = np.zeros((self.pop.n, self.days), dtype=bool)

    def add_day(self, t: int, res: DayResult) -> None:
        """Record landing day ``t`` (0 = ``start``)."""
        daily = res.user_daily
        if self.offset:
            daily = {**daily, "day": daily["day"] - self.offset}
        self._daily.append(daily)
        self._cancels.append((res.cancels["user_idx"], t, res.cancels["voluntary"]))
        self._latent.append((res.latent_dormancy, t))
        self.played[res.played, t] = True
        self.free_end[:, t] = res.free_at_end

    def add_bad(
        self,
        dataset: str,
        day: dt.date,
        file: str,
        rows: list[int],
        keys: list[str],
        kinds: list[str],
    ) -> None:
        n = len(rows)
        self._bad["dataset"] += [dataset] * n
        self._bad["dt"] += [day] * n
        self._bad["file"] += [file] * n
        self._bad["row_number"] += [r + 1 for r in rows]  # 1 = first data row, as in the warehouse
        self._bad["row_key"] += list(keys)
        self._bad["kind"] += list(kinds)

    def add_unknown(
        self, day: dt.date, file: str, rows: list[int], event_ids: list[str], kinds: list[str]
    ) -> None:
        n = len(rows)
        self._unknown["dt"] += [day] * n
        self._unknown["file"] += [file] * n
        self._unknown["row_number"] += [r + 1 for r in rows]
        self._unknown["event_id"] += list(event_ids)
        self._unknown["kind"] += list(kinds)

    @property
    def bad_count(self) -> int:
        return len(self._bad["kind"])

    def bad_kind_counts(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for ds, kind in zip(self._bad["dataset"], self._bad["kind"], strict=True):
            out.setdefault(ds, {})
            out[ds][kind] = out[ds].get(kind, 0) + 1
        return out

    # ---------------------------------------------------------------- tables

    def user_daily(self) -> pa.Table:
        cols = {k: np.concatenate([d[k] for d in self._daily]) for k in self._daily[0]}
        plan = cols["plan"].astype(np.int64)
        return pa.table(
            {
                "user_id": pa.array(self.pop.user_id[cols["user_idx"]], type=pa.int64()),
                "date": _dates(self.start, cols["day"]),
                "hazard": pa.array(cols["hazard"], type=pa.float64()),
                "engagement": pa.array(cols["engagement"], type=pa.float64()),
                "plan": pa.array(PLANS).take(pa.array(plan)),
                "is_paying": pa.array(plan != FREE),
                "is_bot": pa.array(cols["is_bot"]),
                "dormant": pa.array(cols["dormant"]),
                "plays": pa.array(cols["plays"], type=pa.int32()),
            }
        )

    def observed_dormancy(self) -> tuple[np.ndarray, np.ndarray]:
        """(user index, day) of each dormancy churn per the contract, where observable.

        A free-tier user (free at the end of day t - 1) churns on day t when they played on
        t - 1 and have no play on days t .. t + 29; only days whose window ends inside the
        simulated period are decided.
        """
        d = self.days
        if d <= DORMANCY_DAYS:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        cs = np.zeros((self.pop.n, d + 1), dtype=np.int32)
        np.cumsum(self.played, axis=1, out=cs[:, 1:])
        t = np.arange(1, d - DORMANCY_DAYS + 1)
        silent = (cs[:, t + DORMANCY_DAYS] - cs[:, t]) == 0
        churn = self.played[:, t - 1] & self.free_end[:, t - 1] & silent
        users, col = np.nonzero(churn)
        return users, t[col]

    def churn_events(self) -> pa.Table:
        users, days, kinds, sources, details = [], [], [], [], []
        for idx, t, vol in self._cancels:
            users.append(idx)
            days.append(np.full(len(idx), t))
            kinds += ["paid_cancel"] * len(idx)
            sources += ["landing"] * len(idx)
            details += ["voluntary" if v else "payment_failure" for v in vol]
        obs_u, obs_t = self.observed_dormancy()
        users.append(obs_u)
        days.append(obs_t)
        kinds += ["dormancy"] * len(obs_u)
        sources += ["landing"] * len(obs_u)
        details += ["contract_rule"] * len(obs_u)
        for idx, t in self._latent:
            users.append(idx)
            days.append(np.full(len(idx), t))
            kinds += ["dormancy"] * len(idx)
            sources += ["latent"] * len(idx)
            details += ["latent_start"] * len(idx)
        u = np.concatenate(users).astype(np.int64)
        table = pa.table(
            {
                "user_id": pa.array(self.pop.user_id[u], type=pa.int64()),
                "churn_date": _dates(self.start, np.concatenate(days).astype(np.int64)),
                "kind": pa.array(kinds, type=pa.string()),
                "source": pa.array(sources, type=pa.string()),
                "detail": pa.array(details, type=pa.string()),
            }
        )
        return table.sort_by(
            [
                ("churn_date", "ascending"),
                ("user_id", "ascending"),
                ("kind", "ascending"),
                ("source", "ascending"),
            ]
        )

    def bots(self) -> pa.Table:
        idx = np.flatnonzero(self.pop.is_bot)
        return pa.table({"user_id": pa.array(np.sort(self.pop.user_id[idx]), type=pa.int64())})

    def track_genres(self) -> pa.Table:
        cat = self.cat
        return pa.table(
            {
                "track_id": cat.track_id,
                "genre": pa.array(GENRES).take(pa.array(cat.genre.astype(np.int64))),
                "labelled": pa.array(cat.labelled),
                "has_preview": pa.array(cat.has_preview),
                "release_date": _dates(self.start, cat.release_day.astype(np.int64) - self.offset),
            }
        )

    def bad_rows(self) -> pa.Table:
        return pa.table(self._bad, schema=BAD_ROWS_SCHEMA)

    def unknown_refs(self) -> pa.Table:
        return pa.table(self._unknown, schema=UNKNOWN_REFS_SCHEMA)

    def write(self, truth_out: Path) -> list[Path]:
        """Write every truth table as Parquet under ``truth_out``."""
        truth_out.mkdir(parents=True, exist_ok=True)
        tables = {
            "user_daily": self.user_daily(),
            "churn_events": self.churn_events(),
            "bots": self.bots(),
            "track_genres": self.track_genres(),
            "bad_rows": self.bad_rows(),
            "unknown_refs": self.unknown_refs(),
        }
        paths = []
        for name, table in tables.items():
            path = truth_out / f"{name}.parquet"
            pq.write_table(table, path)
            paths.append(path)
        return paths
