"""The model registry: artifacts with their sha256, ``ml.model_registry``, champions, the gate.

Artifacts live under ``settings.artifacts / "models" / <name> / <version>/``: the model file
(``model.joblib``), a ``manifest.json`` and the HTML model card. The registry row records
the model file's sha256; :func:`load_model` recomputes it and refuses a file that differs
(:class:`ArtifactIntegrityError`, naming the file), and so does :func:`promote`: a candidate
whose file changed after it was registered never becomes champion.

Champions: at most one per model name (a partial unique index), and each stint as champion
is a row of ``ml.champion_history`` so :func:`champion` answers "which model was champion
at instant T" for any T -- scoring a past day uses the model that was champion then.
:func:`promote` retires the previous champion and promotes the candidate in one transaction.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from psycopg import sql
from psycopg.types.json import Jsonb

from ml_tasks import warehouse
from ml_tasks.settings import get_settings

if TYPE_CHECKING:  # pragma: no cover
    from ml_tasks.churn.model import ChurnModel

log = logging.getLogger(__name__)

MODEL_FILE = "model.joblib"
MANIFEST_FILE = "manifest.json"
FEATURE_SUITE = "features.user_daily"


class RegistryError(RuntimeError):
    """The registry is not in the state an operation needs."""


class ArtifactIntegrityError(RegistryError):
    """A model file is missing or its sha256 differs from the one registered."""


@dataclass(frozen=True)
class ModelRecord:
    """One row of ``ml.model_registry``."""

    name: str
    version: str
    status: str
    metrics: dict[str, Any]
    artifact_uri: str
    artifact_sha256: str
    horizons: tuple[int, ...] = ()
    train_start: date | None = None
    train_end: date | None = None
    trained_at: datetime | None = None
    feature_service: str = ""
    promoted_at: datetime | None = None
    retired_at: datetime | None = None
    gate_report: dict[str, Any] | None = None
    model_card_uri: str | None = None
    run_id: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def artifact_path(self) -> Path:
        uri = self.artifact_uri
        return Path(uri[len("file://") :] if uri.startswith("file://") else uri)


_COLUMNS = (
    "model_name, version, status, metrics, artifact_uri, artifact_sha256, horizons,"
    " train_start, train_end, trained_at, feature_service, promoted_at, retired_at,"
    " gate_report, model_card_uri, run_id"
)


def _record(row) -> ModelRecord:
    (
        name,
        version,
        status,
        metrics,
        uri,
        sha,
        horizons,
        t0,
        t1,
        trained,
        service,
        promoted,
        retired,
        gate,
        card,
        run_id,
    ) = row
    return ModelRecord(
        name=name,
        version=version,
        status=status,
        metrics=metrics or {},
        artifact_uri=uri,
        artifact_sha256=sha,
        horizons=tuple(horizons or ()),
        train_start=t0,
        train_end=t1,
        trained_at=trained,
        feature_service=service,
        promoted_at=promoted,
        retired_at=retired,
        gate_report=gate,
        model_card_uri=card,
        run_id=run_id,
    )


# --------------------------------------------------------------------------- artifacts


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def artifact_dir(name: str, version: str, artifacts: Path | None = None) -> Path:
    """``<artifacts>/models/<name>/<version>``."""
    root = Path(artifacts or get_settings().artifacts)
    return root / "models" / name / version


def save_artifact(
    model: object, name: str, version: str, manifest: dict, artifacts: Path | None = None
) -> tuple[Path, str]:
    """Write the model file and its manifest; returns (model file, sha256)."""
    import joblib

    folder = artifact_dir(name, version, artifacts)
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    path = folder / MODEL_FILE
    joblib.dump(model, path, compress=3)
    sha = sha256_file(path)
    manifest = {**manifest, "name": name, "version": version, "file": MODEL_FILE, "sha256": sha}
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, default=str))
    return path, sha


def verify_artifact(record: ModelRecord, *, refusing: str = "load it") -> Path:
    """The model file of ``record`` after checking it against the sha256 the registry
    recorded; :class:`ArtifactIntegrityError` names the file and both hashes otherwise."""
    path = record.artifact_path
    if not path.is_file():
        raise ArtifactIntegrityError(
            f"model file {path} of {record.name} {record.version} is missing"
            f" (the registry recorded sha256 {record.artifact_sha256}): refusing to {refusing}"
        )
    actual = sha256_file(path)
    if actual != record.artifact_sha256:
        raise ArtifactIntegrityError(
            f"model file {path} of {record.name} {record.version} has sha256 {actual}, "
            f"but the registry recorded {record.artifact_sha256}: refusing to {refusing}"
        )
    return path


def load_model(record: ModelRecord) -> object:
    """Load a registered model file after checking its sha256 against the registry."""
    import joblib

    return joblib.load(verify_artifact(record))


def load_churn_model(record: ModelRecord) -> ChurnModel:
    """The verified :class:`~ml_tasks.churn.model.ChurnModel` of a registry record."""
    from ml_tasks.churn.model import ChurnModel

    model = load_model(record)
    if not isinstance(model, ChurnModel):
        raise RegistryError(f"{record.artifact_path} does not hold a churn model")
    return model


# --------------------------------------------------------------------------- registry rows


def register(
    *,
    name: str,
    version: str,
    horizons: list[int],
    train_start: date,
    train_end: date,
    feature_service: str,
    metrics: dict,
    artifact_path: Path,
    artifact_sha256: str,
    run_id: str,
    model_card_uri: str | None = None,
    trained_at: datetime | None = None,
    dsn: str | None = None,
) -> ModelRecord:
    """Insert a candidate into ``ml.model_registry``."""
    target = warehouse.ensure_migrated(dsn)
    with warehouse.connect(target) as conn, conn.transaction():
        row = conn.execute(
            "INSERT INTO ml.model_registry (model_name, version, horizons, train_start,"
            " train_end, trained_at, feature_service, metrics, artifact_uri, artifact_sha256,"
            " status, model_card_uri, run_id)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, 'candidate', %s, %s)"
            f" RETURNING {_COLUMNS}",
            (
                name,
                version,
                list(horizons),
                train_start,
                train_end,
                trained_at or datetime.now(UTC),
                feature_service,
                Jsonb(metrics),
                str(artifact_path),
                artifact_sha256,
                model_card_uri,
                run_id,
            ),
        ).fetchone()
    return _record(row)


def get(name: str, version: str, *, dsn: str | None = None) -> ModelRecord | None:
    """A registry record by name and version."""
    with warehouse.connect(warehouse.resolve_dsn(dsn=dsn)) as conn:
        row = conn.execute(
            f"SELECT {_COLUMNS} FROM ml.model_registry WHERE model_name = %s AND version = %s",
            (name, version),
        ).fetchone()
    return _record(row) if row else None


def models(name: str, *, dsn: str | None = None) -> list[ModelRecord]:
    """Every registered version of a model, newest first."""
    with warehouse.connect(warehouse.resolve_dsn(dsn=dsn)) as conn:
        rows = conn.execute(
            f"SELECT {_COLUMNS} FROM ml.model_registry WHERE model_name = %s"
            " ORDER BY trained_at DESC, version DESC",
            (name,),
        ).fetchall()
    return [_record(r) for r in rows]


def update_report(
    name: str,
    version: str,
    *,
    gate_report: dict | None = None,
    model_card_uri: str | None = None,
    dsn: str | None = None,
) -> None:
    """Record the gate report and/or model card of a registered model."""
    with warehouse.connect(warehouse.resolve_dsn(dsn=dsn)) as conn, conn.transaction():
        conn.execute(
            "UPDATE ml.model_registry SET gate_report = coalesce(%s, gate_report),"
            " model_card_uri = coalesce(%s, model_card_uri)"
            " WHERE model_name = %s AND version = %s",
            (
                Jsonb(gate_report) if gate_report is not None else None,
                model_card_uri,
                name,
                version,
            ),
        )


def champion(name: str, at: datetime, *, dsn: str | None = None) -> ModelRecord | None:
    """The model that was champion of ``name`` at instant ``at`` (None if there was none)."""
    if at.tzinfo is None:
        raise ValueError("champion() needs a timezone-aware instant")
    with warehouse.connect(warehouse.resolve_dsn(dsn=dsn)) as conn:
        row = conn.execute(
            f"SELECT {', '.join('r.' + c.strip() for c in _COLUMNS.split(','))}"
            " FROM ml.champion_history h JOIN ml.model_registry r USING (model_name, version)"
            " WHERE h.model_name = %s AND h.champion_from <= %s"
            " AND (h.champion_until IS NULL OR h.champion_until > %s)"
            " ORDER BY h.champion_from DESC LIMIT 1",
            (name, at, at),
        ).fetchone()
    return _record(row) if row else None


def record_training_run(
    dsn: str, model_name: str, run_id: str, day: date, started_at: datetime, **values
) -> None:
    """Insert or update the ``ml.training_runs`` row of a training run (status, rows, error)."""
    cols = ["run_id", "model_name", "training_date", "started_at", *values]
    statement = sql.SQL(
        "INSERT INTO ml.training_runs ({cols}) VALUES ({params})"
        " ON CONFLICT (run_id, model_name) DO UPDATE SET {updates}"
    ).format(
        cols=sql.SQL(", ").join(map(sql.Identifier, cols)),
        params=sql.SQL(", ").join(sql.Placeholder() * len(cols)),
        updates=sql.SQL(", ").join(
            sql.SQL("{c} = excluded.{c}").format(c=sql.Identifier(c)) for c in cols[2:]
        ),
    )
    with warehouse.connect(dsn) as conn, conn.transaction():
        conn.execute(statement, (run_id, model_name, day, started_at, *values.values()))


def later_champion(name: str, at: datetime, *, dsn: str | None = None) -> ModelRecord | None:
    """A model whose stint as champion of ``name`` started after ``at``, if any.

    Promoting at ``at`` would then rewrite history that scores may already rely on.
    """
    with warehouse.connect(warehouse.resolve_dsn(dsn=dsn)) as conn:
        row = conn.execute(
            "SELECT version FROM ml.champion_history WHERE model_name = %s"
            " AND champion_from > %s ORDER BY champion_from LIMIT 1",
            (name, at),
        ).fetchone()
    return get(name, row[0], dsn=dsn) if row else None


def promote(
    name: str,
    version: str,
    *,
    run_id: str,
    at: datetime | None = None,
    dsn: str | None = None,
) -> ModelRecord:
    """Make ``version`` the champion of ``name`` from ``at`` (default now), retiring the
    current champion, in one transaction.

    A candidate whose model file is missing or no longer matches its registered sha256 is
    refused (:class:`ArtifactIntegrityError`, naming the file and both hashes) and the
    current champion stays champion. A promotion at the very instant the current stint
    began replaces that stint (it never held for any instant of its own).
    """
    at = at or datetime.now(UTC)
    target = warehouse.resolve_dsn(dsn=dsn)
    with warehouse.connect(target) as conn, conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (warehouse.lock_key(f"champion.{name}"),))
        row = conn.execute(
            f"SELECT {_COLUMNS} FROM ml.model_registry WHERE model_name = %s AND version = %s"
            " FOR UPDATE",
            (name, version),
        ).fetchone()
        if row is None:
            raise RegistryError(f"{name} {version} is not registered")
        candidate = _record(row)
        if candidate.status == "champion":
            raise RegistryError(f"{name} {version} is already the champion")
        current = conn.execute(
            "SELECT version FROM ml.model_registry WHERE model_name = %s AND status = 'champion'",
            (name,),
        ).fetchone()
        keeps = f"{name} {current[0]} stays champion" if current else f"{name} has no champion"
        try:
            verify_artifact(candidate, refusing=f"promote it ({keeps})")
        except ArtifactIntegrityError as exc:
            log.error("%s", exc)
            raise
        conn.execute(
            "UPDATE ml.model_registry SET status = 'retired', retired_at = %s"
            " WHERE model_name = %s AND status = 'champion'",
            (at, name),
        )
        # A stint that would end where it began (a day retrained on changed inputs and
        # promoted at the same instant) never held: the later promotion supersedes it.
        conn.execute(
            "DELETE FROM ml.champion_history WHERE model_name = %s AND champion_until IS NULL"
            " AND champion_from = %s",
            (name, at),
        )
        conn.execute(
            "UPDATE ml.champion_history SET champion_until = %s"
            " WHERE model_name = %s AND champion_until IS NULL",
            (at, name),
        )
        conn.execute(
            "UPDATE ml.model_registry SET status = 'champion', promoted_at = %s,"
            " retired_at = NULL WHERE model_name = %s AND version = %s",
            (at, name, version),
        )
        conn.execute(
            "INSERT INTO ml.champion_history (model_name, version, champion_from,"
            " promoted_by_run) VALUES (%s, %s, %s, %s)",
            (name, version, at, run_id),
        )
    log.info("promoted %s %s to champion", name, version)
    record = get(name, version, dsn=target)
    assert record is not None
    return record


# --------------------------------------------------------------------------- the gate


def features_validated(
    days: list[date], *, suite: str = FEATURE_SUITE, dsn: str | None = None
) -> dict:
    """Whether every feature day used passed its latest validation of ``suite``.

    A day without a verdict has not passed. Returns {passed, failed_days, missing_days}.
    """
    with warehouse.connect(warehouse.resolve_dsn(dsn=dsn)) as conn:
        latest = dict(
            conn.execute(
                "SELECT DISTINCT ON (dt) dt, success FROM monitoring.validation_results"
                " WHERE suite = %s AND dt = ANY(%s) ORDER BY dt, validated_at DESC",
                (suite, list(days)),
            ).fetchall()
        )
    failed = sorted(d.isoformat() for d in days if latest.get(d) is False)
    missing = sorted(d.isoformat() for d in days if d not in latest)
    return {
        "passed": not failed and not missing,
        "failed_days": failed,
        "missing_days": missing,
        "days": len(days),
    }


def _metric(metrics: dict | None, horizon: int, metric: str) -> float | None:
    if not metrics:
        return None
    value = (metrics.get(str(horizon)) or {}).get(metric)
    return None if value is None else float(value)


def gate(
    *,
    candidate: dict,
    baseline: dict | None,
    champion: dict | None,
    champion_version: str | None,
    validation: dict,
    metric: str,
    horizon: int,
    tolerance: float,
    max_ece: float,
    require_validated_features: bool,
    champion_error: str | None = None,
) -> dict:
    """The promotion verdict. Metric dicts map str(horizon) -> {metric: value}.

    - With a champion: the candidate's ``metric`` at ``horizon`` must be at least the
      champion's (evaluated on the same holdout) minus ``tolerance``.
    - Without one: it must beat the baseline's.
    - Every evaluated horizon's ECE must be at most ``max_ece``.
    - Every feature day used must have passed validation (unless not required).
    """
    checks = []
    cand = _metric(candidate, horizon, metric)
    if champion_error:
        checks.append(
            {
                "check": "champion",
                "passed": False,
                "detail": f"current champion could not be evaluated: {champion_error}",
            }
        )
    elif champion is not None:
        champ = _metric(champion, horizon, metric)
        ok = cand is not None and (champ is None or cand >= champ - tolerance)
        checks.append(
            {
                "check": f"{metric}@{horizon}d vs champion {champion_version}",
                "passed": ok,
                "candidate": cand,
                "champion": champ,
                "tolerance": tolerance,
                "detail": (f"candidate {cand} vs champion {champ} (tolerance {tolerance})"),
            }
        )
    else:
        base = _metric(baseline, horizon, metric)
        ok = cand is not None and base is not None and cand > base
        checks.append(
            {
                "check": f"{metric}@{horizon}d vs baseline (first model)",
                "passed": ok,
                "candidate": cand,
                "baseline": base,
                "detail": f"candidate {cand} must beat the baseline {base}",
            }
        )
    eces = {h: (v or {}).get("ece") for h, v in candidate.items()}
    evaluated = {h: e for h, e in eces.items() if e is not None}
    bad = {h: e for h, e in evaluated.items() if e > max_ece}
    checks.append(
        {
            "check": "calibration (ECE per horizon)",
            "passed": bool(evaluated) and not bad,
            "ece": evaluated,
            "not_evaluated": sorted(h for h, e in eces.items() if e is None),
            "max_ece": max_ece,
            "detail": (
                f"ECE above {max_ece} at {sorted(bad)}"
                if bad
                else f"ECE within {max_ece} at {sorted(evaluated)}"
                if evaluated
                else "no horizon could be evaluated"
            ),
        }
    )
    checks.append(
        {
            "check": "training data validated",
            **validation,
            "passed": validation["passed"] or not require_validated_features,
            "required": require_validated_features,
            "detail": (
                "every feature day passed validation"
                if validation["passed"]
                else f"failed {validation['failed_days']}, no verdict {validation['missing_days']}"
                + ("" if require_validated_features else " (not required by config)")
            ),
        }
    )
    return verdict(checks)


def verdict(checks: list[dict]) -> dict:
    """A gate's decision from its checks (each ``{check, passed, detail, ...}``): promote
    only if every check passed; the reasons are the failed checks' details (or all)."""
    passed = all(c["passed"] for c in checks)
    return {
        "passed": passed,
        "verdict": "promote" if passed else "keep as candidate",
        "reasons": [c["detail"] for c in checks if not c["passed"]]
        or [c["detail"] for c in checks],
        "checks": checks,
        "decided_at": datetime.now(UTC).isoformat(),
    }
