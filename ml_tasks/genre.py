"""Genre classification of catalogue tracks from their preview clips.

``train_genre(D)`` trains on the labelled catalogue as of D (the latest delivered version of
each track has a genre) whose preview has a row in ``features.track_audio``. The tracks are
split once (seeded, stratified by genre, 20 % held out), and two candidates are compared on
the same held-out tracks:

- **gbm**: LightGBM on the 50 summary features (MFCC, chroma, spectral, ZCR, RMS, tempo);
- **cnn**: a tiny TensorFlow CNN over 64-band log-mel patches of the clips (cached by
  ``ml_tasks.audio`` at extraction, decoded again on a cache miss); a track's prediction is
  the mean over its patches.

Both are reported (accuracy, macro F1, confusion matrix) beside the majority-class baseline;
the better one (accuracy, then macro F1) is saved as one artifact (sha256 in the registry),
registered as ``genre`` with an HTML model card, and promoted at the end of day D if it
passes the gate: not worse than the champion then (evaluated on the same held-out tracks)
by more than ``tolerance``, or, for the first model, better than the majority class; and
never below ``min_accuracy``.

``score_genres(D)`` uses the model that was champion when D closed to predict the genre of
every unlabelled catalogue track (as of D) with audio features, into
``scores.track_genres`` (one transaction); without a champion it records a skip.
"""

from __future__ import annotations

import html
import json
import logging
import os
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from ml_tasks import audio, registry, training_inputs, warehouse
from ml_tasks.scoring import day_end
from ml_tasks.settings import get_settings

log = logging.getLogger(__name__)

MODEL_NAME = "genre"
FEATURE_SERVICE = "features.track_audio"
FEATURES = list(audio.FEATURE_COLUMNS)
CARD_FILE = "model_card.html"


class NoGenreChampion(RuntimeError):
    """No genre model was champion when the day closed."""


class NotEnoughData(RuntimeError):
    """Too few labelled tracks with audio features to train and evaluate."""


# --------------------------------------------------------------------------- config


@dataclass(frozen=True)
class GbmConfig:
    n_estimators: int = 300
    learning_rate: float = 0.05
    num_leaves: int = 15
    min_child_samples: int = 5
    colsample_bytree: float = 0.8


@dataclass(frozen=True)
class CnnConfig:
    enabled: bool = True
    epochs: int = 25
    batch_size: int = 32
    patch_frames: int = 64
    patch_hop: int = 16
    learning_rate: float = 0.003
    #: Early stopping (0: off): hold out ``validation_share`` of the training tracks (whole
    #: tracks, stratified by genre), stop once their loss has not improved by
    #: ``min_delta`` for ``patience`` epochs, and keep the best epoch's weights.
    patience: int = 3
    validation_share: float = 0.1
    min_delta: float = 0.001


@dataclass(frozen=True)
class GateConfig:
    tolerance: float = 0.0
    min_accuracy: float = 0.5


@dataclass(frozen=True)
class GenreConfig:
    """``config/genre.yaml``."""

    holdout_share: float = 0.2
    seed: int = 7
    gbm: GbmConfig = field(default_factory=GbmConfig)
    cnn: CnnConfig = field(default_factory=CnnConfig)
    gate: GateConfig = field(default_factory=GateConfig)

    @classmethod
    def load(cls, path: Path | None = None) -> GenreConfig:
        path = path or get_settings().config_dir / "genre.yaml"
        doc = (yaml.safe_load(path.read_text()) if path.is_file() else None) or {}
        return cls.from_dict(doc, source=path.name)

    @classmethod
    def from_dict(cls, doc: dict, source: str = "config") -> GenreConfig:
        parts = {"gbm": GbmConfig, "cnn": CnnConfig, "gate": GateConfig}
        unknown = set(doc) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"{source}: unknown setting(s) {sorted(unknown)}")
        values = {}
        for key, value in doc.items():
            if key in parts:
                sub = parts[key]
                bad = set(value or {}) - set(sub.__dataclass_fields__)
                if bad:
                    raise ValueError(f"{source}: unknown setting(s) {key}.{sorted(bad)}")
                values[key] = sub(**(value or {}))
            else:
                values[key] = value
        cfg = cls(**values)
        if not 0.05 <= cfg.holdout_share <= 0.5:
            raise ValueError(f"{source}: holdout_share must be within 0.05..0.5")
        if cfg.cnn.patience < 0 or cfg.cnn.min_delta < 0:
            raise ValueError(f"{source}: cnn.patience and cnn.min_delta must not be negative")
        if not 0.05 <= cfg.cnn.validation_share <= 0.5:
            raise ValueError(f"{source}: cnn.validation_share must be within 0.05..0.5")
        return cfg


# --------------------------------------------------------------------------- the model


class GenreModel:
    """A trained genre classifier: LightGBM on summary features, or a CNN on log-mels.

    Pickles to one file (the Keras model travels as the bytes of its ``.keras`` file).
    """

    def __init__(self, kind: str, classes: list[str], **parts) -> None:
        if kind not in ("gbm", "cnn"):
            raise ValueError(f"unknown genre model kind {kind!r}")
        self.kind = kind
        self.classes = list(classes)
        self.feature_names: list[str] = list(parts.get("feature_names", FEATURES))
        self.gbm = parts.get("gbm")
        self.keras_bytes: bytes | None = parts.get("keras_bytes")
        self.band_mean: np.ndarray | None = parts.get("band_mean")
        self.band_std: np.ndarray | None = parts.get("band_std")
        self.patch_frames: int = parts.get("patch_frames", 64)
        self.patch_hop: int = parts.get("patch_hop", 16)
        self._keras = parts.get("keras_model")

    @property
    def needs_audio(self) -> bool:
        return self.kind == "cnn"

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        if self.kind == "cnn" and self._keras is not None and self.keras_bytes is None:
            state["keras_bytes"] = _keras_to_bytes(self._keras)
        state["_keras"] = None
        return state

    def predict_proba(
        self, frame: pd.DataFrame, logmels: list[np.ndarray] | None = None
    ) -> np.ndarray:
        """Class probabilities (rows x classes) for summary features or log-mels."""
        if self.kind == "gbm":
            return self.gbm.predict_proba(frame[self.feature_names].to_numpy(dtype=np.float64))
        if logmels is None:
            raise ValueError("the CNN genre model needs the clips' log-mel spectrograms")
        if self._keras is None:
            self._keras = _keras_from_bytes(self.keras_bytes)
        patches, owner = _patches(logmels, self.patch_frames, self.patch_hop)
        x = _normalise(patches, self.band_mean, self.band_std)
        probs = self._keras.predict(x, verbose=0, batch_size=256) if len(x) else np.zeros((0, 1))
        out = np.zeros((len(logmels), len(self.classes)))
        np.add.at(out, owner, probs)
        counts = np.bincount(owner, minlength=len(logmels))[:, None]
        return out / np.maximum(counts, 1)

    def feature_importances(self) -> dict[str, float]:
        if self.kind != "gbm":
            return {}
        gain = self.gbm.booster_.feature_importance(importance_type="gain")
        total = float(gain.sum()) or 1.0
        pairs = sorted(zip(self.feature_names, gain / total, strict=True), key=lambda p: -p[1])
        return {k: float(v) for k, v in pairs}


def _keras_to_bytes(model) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.keras"
        model.save(path)
        return path.read_bytes()


def _keras_from_bytes(data: bytes | None):
    if not data:
        raise registry.RegistryError("the CNN genre model has no network weights")
    import keras

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.keras"
        path.write_bytes(data)
        return keras.models.load_model(path, compile=False)


def _patches(logmels: list[np.ndarray], frames: int, hop: int) -> tuple[np.ndarray, np.ndarray]:
    """Fixed-size patches (n, bands, frames, 1) of every clip, and which clip each is of.

    A clip shorter than a patch is padded with silence (-100 dB)."""
    out, owner = [], []
    for i, spec in enumerate(logmels):
        spec = np.asarray(spec, dtype=np.float32)
        if spec.shape[1] < frames:
            pad = np.full((spec.shape[0], frames - spec.shape[1]), -100.0, np.float32)
            spec = np.concatenate([spec, pad], axis=1)
        starts = list(range(0, spec.shape[1] - frames + 1, hop))
        if starts[-1] != spec.shape[1] - frames:
            starts.append(spec.shape[1] - frames)
        for s in starts:
            out.append(spec[:, s : s + frames])
            owner.append(i)
    if not out:
        return np.zeros((0, audio.LOGMEL_BANDS, frames, 1), np.float32), np.zeros(0, int)
    return np.stack(out)[..., None], np.asarray(owner)


def _normalise(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    return ((x - mean[None, :, None, None]) / std[None, :, None, None]).astype(np.float32)


# --------------------------------------------------------------------------- data

LABELLED_SQL = """
WITH catalogue AS (
    SELECT DISTINCT ON (track_id) track_id, genre
    FROM raw.track_versions WHERE dt <= %(day)s
    ORDER BY track_id, dt DESC
)
SELECT c.track_id, c.genre, a.*
FROM catalogue c JOIN features.track_audio a USING (track_id)
WHERE {where}
ORDER BY c.track_id
"""


def load_tracks(dsn: str, day: date, *, labelled: bool) -> pd.DataFrame:
    """Catalogue tracks as of ``day`` with audio features: labelled or unlabelled ones."""
    where = "c.genre IS NOT NULL" if labelled else "c.genre IS NULL"
    with warehouse.connect(dsn) as conn:
        cur = conn.execute(LABELLED_SQL.format(where=where), {"day": day})
        cols = [d.name for d in cur.description]
        frame = pd.DataFrame(cur.fetchall(), columns=cols)
    frame = frame.loc[:, ~frame.columns.duplicated()]
    for c in FEATURES:
        frame[c] = frame[c].astype(float) if len(frame) else pd.Series(dtype=float)
    return frame


def load_logmels(
    frame: pd.DataFrame, *, artifacts: Path | None = None, landing_root: Path | None = None
) -> list[np.ndarray | None]:
    """The cached log-mel of each row's clip (by sha256); decoded again on a cache miss."""
    cache = audio.logmel_cache_dir(artifacts)
    landing = Path(landing_root or get_settings().landing_root)
    out: list[np.ndarray | None] = []
    for sha, rel in zip(frame["file_sha256"], frame["preview_path"], strict=True):
        spec = audio.load_logmel(cache, sha)
        if spec is None:
            path = audio.resolve_clip(landing, rel)
            try:
                if path is None or audio.sha256_file(path) != sha:
                    raise audio.AudioReject("missing", "the clip changed since extraction")
                y, rate, _ = audio.decode(path)
                spec = audio.logmel_of(y, rate)
                audio.save_logmel(cache, sha, spec)
            except (audio.AudioReject, OSError) as exc:
                log.warning("no log-mel for %s: %s", rel, exc)
                spec = None
        out.append(spec)
    return out


# --------------------------------------------------------------------------- metrics


def evaluate(y_true: list[str], y_pred: list[str], classes: list[str]) -> dict:
    """Accuracy, macro F1 and the confusion matrix (rows = true, columns = predicted)."""
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

    if not len(y_true):
        return {"tracks": 0, "accuracy": None, "macro_f1": None}
    present = [c for c in classes if c in set(y_true) | set(y_pred)]
    return {
        "tracks": len(y_true),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(
            f1_score(y_true, y_pred, labels=present, average="macro", zero_division=0)
        ),
        "labels": present,
        "confusion": confusion_matrix(y_true, y_pred, labels=present).tolist(),
    }


def _predict_names(model: GenreModel, frame: pd.DataFrame, logmels) -> list[str]:
    probs = model.predict_proba(frame, logmels)
    return [model.classes[i] for i in probs.argmax(axis=1)]


# --------------------------------------------------------------------------- fitting


def fit_gbm(train: pd.DataFrame, classes: list[str], cfg: GenreConfig) -> GenreModel:
    import lightgbm as lgb

    g = cfg.gbm
    model = lgb.LGBMClassifier(
        objective="multiclass",
        n_estimators=g.n_estimators,
        learning_rate=g.learning_rate,
        num_leaves=g.num_leaves,
        min_child_samples=g.min_child_samples,
        colsample_bytree=g.colsample_bytree,
        random_state=cfg.seed,
        n_jobs=1,  # OpenMP threads spinning on busy cores made it 12x slower (measured)
        verbose=-1,
    )
    y = pd.Categorical(train["genre"], categories=classes).codes
    model.fit(train[FEATURES].to_numpy(dtype=np.float64), y)
    # the classifier's classes are codes 0..k-1 of ``classes`` (all present in training)
    return GenreModel("gbm", classes, gbm=model, feature_names=FEATURES)


def fit_cnn(logmels: list[np.ndarray], labels: list[str], classes: list[str], cfg: GenreConfig):
    """Train the tiny CNN on log-mel patches; returns a :class:`GenreModel` and what the fit
    did (epochs run, best epoch, tracks fitted and held out for early stopping)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import tensorflow as tf

    c = cfg.cnn
    threads = min(2, audio.default_workers())
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:  # already initialised in this process
        pass
    keras.utils.set_random_seed(cfg.seed)
    codes = pd.Categorical(labels, categories=classes).codes
    fit_idx, val_idx = _early_stopping_split(labels, cfg)
    patches, owner = _patches([logmels[i] for i in fit_idx], c.patch_frames, c.patch_hop)
    y = codes[fit_idx][owner]
    mean = patches.mean(axis=(0, 2, 3))
    std = patches.std(axis=(0, 2, 3)) + 1e-3
    x = _normalise(patches, mean, std)
    del patches
    layers = keras.layers
    net = keras.Sequential(
        [
            keras.Input(shape=(audio.LOGMEL_BANDS, c.patch_frames, 1)),
            layers.MaxPooling2D(2),
            layers.Conv2D(16, 3, padding="same", activation="relu"),
            layers.MaxPooling2D(2),
            layers.Conv2D(32, 3, padding="same", activation="relu"),
            layers.MaxPooling2D(2),
            layers.Conv2D(32, 3, padding="same", activation="relu"),
            layers.GlobalAveragePooling2D(),
            layers.Dropout(0.2),
            layers.Dense(len(classes), activation="softmax"),
        ]
    )
    net.compile(
        optimizer=keras.optimizers.Adam(c.learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    extra: dict = {}
    stopper = None
    if len(val_idx):
        val_patches, val_owner = _patches(
            [logmels[i] for i in val_idx], c.patch_frames, c.patch_hop
        )
        extra = {
            "validation_data": (_normalise(val_patches, mean, std), codes[val_idx][val_owner]),
        }
        stopper = keras.callbacks.EarlyStopping(
            monitor="val_loss",
            patience=c.patience,
            min_delta=c.min_delta,
            restore_best_weights=True,
        )
        extra["callbacks"] = [stopper]
    history = net.fit(
        x, y, epochs=c.epochs, batch_size=c.batch_size, shuffle=True, verbose=0, **extra
    )
    losses = history.history.get("val_loss") or []
    # the weights kept are those of the stopper's best epoch (an improvement beyond min_delta)
    best = None if stopper is None or stopper.best_epoch is None else int(stopper.best_epoch)
    fit = {
        "epochs_run": len(history.history["loss"]),
        "best_epoch": None if best is None else best + 1,
        "best_validation_loss": None if best is None else round(float(losses[best]), 5),
        "fit_tracks": len(fit_idx),
        "validation_tracks": len(val_idx),
    }
    model = GenreModel(
        "cnn",
        classes,
        keras_model=net,
        band_mean=mean,
        band_std=std,
        patch_frames=c.patch_frames,
        patch_hop=c.patch_hop,
    )
    return model, fit


def _early_stopping_split(labels: list[str], cfg: GenreConfig) -> tuple[np.ndarray, np.ndarray]:
    """Training tracks to fit and to hold out for early stopping (none when it is off)."""
    share = cfg.cnn.validation_share
    if not cfg.cnn.patience or len(labels) * share < len(set(labels)):
        idx = np.arange(len(labels))
        return idx, idx[:0]
    return _stratified_split(labels, share, cfg.seed)


def _stratified_split(labels, share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions kept and held out (``share`` of them): seeded, stratified by label when
    every label has at least two rows."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(labels))
    stratify = labels if pd.Series(labels).value_counts().min() >= 2 else None
    kept, held = train_test_split(idx, test_size=share, random_state=seed, stratify=stratify)
    return np.sort(kept), np.sort(held)


def split_tracks(frame: pd.DataFrame, cfg: GenreConfig) -> tuple[np.ndarray, np.ndarray]:
    """Held-out split by track: seeded, stratified by genre when every genre allows it."""
    return _stratified_split(frame["genre"], cfg.holdout_share, cfg.seed)


# --------------------------------------------------------------------------- gate


def genre_gate(
    *,
    candidate: dict,
    baseline: dict,
    champion: dict | None,
    champion_version: str | None,
    champion_error: str | None,
    cfg: GateConfig,
) -> dict:
    """Promotion verdict on held-out accuracy (see the module docstring)."""
    cand = candidate.get("accuracy")
    checks = []
    if champion_error:
        checks.append(
            {
                "check": "champion",
                "passed": False,
                "detail": f"current champion could not be evaluated: {champion_error}",
            }
        )
    elif champion is not None:
        champ = champion.get("accuracy")
        ok = cand is not None and (champ is None or cand >= champ - cfg.tolerance)
        checks.append(
            {
                "check": f"accuracy vs champion {champion_version}",
                "passed": ok,
                "candidate": cand,
                "champion": champ,
                "tolerance": cfg.tolerance,
                "detail": f"candidate {cand} vs champion {champ} (tolerance {cfg.tolerance})",
            }
        )
    else:
        base = baseline.get("accuracy")
        ok = cand is not None and base is not None and cand > base
        checks.append(
            {
                "check": "accuracy vs majority-class baseline (first model)",
                "passed": ok,
                "candidate": cand,
                "baseline": base,
                "detail": f"candidate {cand} must beat the majority-class baseline {base}",
            }
        )
    checks.append(
        {
            "check": "minimum accuracy",
            "passed": cand is not None and cand >= cfg.min_accuracy,
            "candidate": cand,
            "min_accuracy": cfg.min_accuracy,
            "detail": f"held-out accuracy {cand} vs the floor {cfg.min_accuracy}",
        }
    )
    return registry.verdict(checks)


# --------------------------------------------------------------------------- training


def _record_run(dsn: str, run_id: str, day: date, started_at: datetime, **values) -> None:
    registry.record_training_run(dsn, MODEL_NAME, run_id, day, started_at, **values)


def train_genre(
    day: date,
    *,
    run_id: str,
    dsn: str | None = None,
    artifacts: Path | None = None,
    landing_root: Path | None = None,
    config: GenreConfig | None = None,
    promote_at: datetime | None = None,
) -> dict:
    """Train both genre candidates as of ``day``, register the better one, run the gate,
    write the model card. Returns a JSON-friendly summary (version, metrics, verdict)."""
    started = time.perf_counter()
    started_at = datetime.now(UTC)
    cfg = config or GenreConfig.load()
    target = warehouse.ensure_migrated(dsn)
    return training_inputs.train_unless_unchanged(
        target,
        MODEL_NAME,
        day,
        cfg,
        lambda: _train(
            day, cfg, target, run_id, artifacts, landing_root, promote_at, started, started_at
        ),
        run_id=run_id,
        started=started,
        started_at=started_at,
    )


def _train(day, cfg, target, run_id, artifacts, landing_root, promote_at, started, started_at):
    data = load_tracks(target, day, labelled=True)
    if len(data) < 20 or data["genre"].nunique() < 2:
        raise NotEnoughData(
            f"{len(data)} labelled tracks with audio features as of {day}"
            f" ({data['genre'].nunique() if len(data) else 0} genres): need at least 20 and 2"
        )
    train_idx, test_idx = split_tracks(data, cfg)
    train, test = data.iloc[train_idx], data.iloc[test_idx]
    classes = sorted(train["genre"].unique())
    y_test = test["genre"].tolist()
    majority = train["genre"].value_counts().idxmax()
    results: dict[str, dict] = {
        "baseline": {**evaluate(y_test, [majority] * len(test), classes), "predicts": majority}
    }
    models: dict[str, GenreModel] = {}
    seconds: dict[str, float] = {}

    tick = time.perf_counter()
    models["gbm"] = fit_gbm(train, classes, cfg)
    results["gbm"] = evaluate(y_test, _predict_names(models["gbm"], test, None), classes)
    seconds["gbm"] = round(time.perf_counter() - tick, 2)

    test_mels = None
    if cfg.cnn.enabled:
        tick = time.perf_counter()
        mels = load_logmels(data, artifacts=artifacts, landing_root=landing_root)
        have = np.array([m is not None for m in mels])
        tr = [i for i in train_idx if have[i]]
        te_ok = bool(have[test_idx].all())
        if len(tr) >= 10 and te_ok:
            models["cnn"], cnn_fit = fit_cnn(
                [mels[i] for i in tr], data["genre"].iloc[tr].tolist(), classes, cfg
            )
            test_mels = [mels[i] for i in test_idx]
            results["cnn"] = evaluate(
                y_test, _predict_names(models["cnn"], test, test_mels), classes
            )
            results["cnn"]["train_tracks"] = len(tr)
            results["cnn"]["fit"] = cnn_fit
        else:
            results["cnn"] = {
                "skipped": f"log-mels missing for {int((~have).sum())} of {len(have)} clips"
            }
        seconds["cnn"] = round(time.perf_counter() - tick, 2)

    ranked = sorted(
        (k for k in models),
        key=lambda k: (results[k]["accuracy"], results[k]["macro_f1"], k == "gbm"),
        reverse=True,
    )
    chosen = ranked[0]
    model = models[chosen]

    promote_at = promote_at or day_end(day)
    champ_record = registry.champion(MODEL_NAME, promote_at, dsn=target)
    champ_metrics, champ_error = None, None
    if champ_record is not None:
        try:
            champ = registry.load_model(champ_record)
            if not isinstance(champ, GenreModel):
                raise registry.RegistryError(f"{champ_record.artifact_path} is no genre model")
            if champ.needs_audio and test_mels is None:
                test_mels = load_logmels(test, artifacts=artifacts, landing_root=landing_root)
            champ_metrics = evaluate(
                y_test,
                _predict_names(champ, test, test_mels),
                sorted(set(classes) | set(champ.classes)),
            )
        except Exception as exc:  # a champion we cannot evaluate blocks promotion
            champ_error = f"{type(exc).__name__}: {exc}"
    report = genre_gate(
        candidate=results[chosen],
        baseline=results["baseline"],
        champion=champ_metrics,
        champion_version=champ_record.version if champ_record else None,
        champion_error=champ_error,
        cfg=cfg.gate,
    )
    later = registry.later_champion(MODEL_NAME, promote_at, dsn=target)
    if later is not None:
        detail = (
            f"a later champion ({later.version}) already serves from after {promote_at}:"
            " a backfilled training run does not rewrite champion history"
        )
        report["checks"].append({"check": "chronology", "passed": False, "detail": detail})
        report["reasons"] = [*(report["reasons"] if not report["passed"] else []), detail]
        report["passed"] = False
        report["verdict"] = "keep as candidate"

    now = datetime.now(UTC)
    version = f"{day:%Y%m%d}-{now:%H%M%S}-{uuid.uuid4().hex[:6]}"
    metrics = {
        "chosen": chosen,
        "accuracy": results[chosen]["accuracy"],
        "macro_f1": results[chosen]["macro_f1"],
        "candidates": {k: v for k, v in results.items() if k != "baseline"},
        "baseline": results["baseline"],
        "champion": (
            {"version": champ_record.version, **(champ_metrics or {}), "error": champ_error}
            if champ_record
            else None
        ),
        "classes": classes,
        "rows": {"train": len(train), "holdout": len(test)},
        "holdout_share": cfg.holdout_share,
        "seed": cfg.seed,
        "fit_seconds": seconds,
        "extractor_version": audio.EXTRACTOR_VERSION,
        "config": asdict(cfg),
    }
    manifest = {
        "model": MODEL_NAME,
        "kind": chosen,
        "training_date": day.isoformat(),
        "feature_source": FEATURE_SERVICE,
        "feature_names": FEATURES if chosen == "gbm" else ["logmel64"],
        "classes": classes,
        "run_id": run_id,
        "trained_at": now.isoformat(),
    }
    path, sha = registry.save_artifact(model, MODEL_NAME, version, manifest, artifacts)
    record = registry.register(
        name=MODEL_NAME,
        version=version,
        horizons=[],
        train_start=day,
        train_end=day,
        feature_service=FEATURE_SERVICE,
        metrics=metrics,
        artifact_path=path,
        artifact_sha256=sha,
        run_id=run_id,
        trained_at=now,
        dsn=target,
    )
    if report["passed"]:
        record = registry.promote(MODEL_NAME, version, run_id=run_id, at=promote_at, dsn=target)
    card = write_card(record, model, metrics, report, day)
    registry.update_report(
        MODEL_NAME, version, gate_report=report, model_card_uri=str(card), dsn=target
    )
    elapsed = time.perf_counter() - started
    _record_run(
        target,
        run_id,
        day,
        started_at,
        status="succeeded",
        finished_at=datetime.now(UTC),
        version=version,
        rows_train=len(train),
        rows_calibration=0,
        rows_holdout=len(test),
        seconds=elapsed,
    )
    log.info(
        "trained genre %s (%s) in %.1f s: accuracy gbm %s, cnn %s, baseline %s; %s",
        version,
        chosen,
        elapsed,
        results["gbm"].get("accuracy"),
        results.get("cnn", {}).get("accuracy"),
        results["baseline"]["accuracy"],
        report["verdict"],
    )
    return {
        "version": version,
        "status": record.status,
        "chosen": chosen,
        "accuracy": {k: v.get("accuracy") for k, v in results.items()},
        "macro_f1": {k: v.get("macro_f1") for k, v in results.items()},
        "metrics": metrics,
        "gate": report,
        "model_card": str(card),
        "artifact_sha256": sha,
        "seconds": round(elapsed, 1),
    }


# --------------------------------------------------------------------------- model card


def _confusion_html(m: dict) -> str:
    labels = m.get("labels") or []
    rows = ["<table><tr><th>true \\ predicted</th>"]
    rows += [f"<th>{html.escape(c)}</th>" for c in labels]
    rows.append("</tr>")
    for label, counts in zip(labels, m.get("confusion") or [], strict=False):
        rows.append(f"<tr><th>{html.escape(label)}</th>")
        rows += [f"<td>{v}</td>" for v in counts]
        rows.append("</tr>")
    rows.append("</table>")
    return "".join(rows)


def write_card(record, model: GenreModel, metrics: dict, report: dict, day: date) -> Path:
    """A self-contained HTML model card beside the artifact."""

    def fmt(v) -> str:
        return f"{v:.4f}" if isinstance(v, float) else html.escape(str(v))

    table = [
        "<table><tr><th>model</th><th>held-out tracks</th><th>accuracy</th><th>macro F1</th></tr>"
    ]
    rows = {**metrics["candidates"], "baseline (majority class)": metrics["baseline"]}
    if metrics.get("champion"):
        rows[f"champion {metrics['champion']['version']}"] = metrics["champion"]
    for name, m in rows.items():
        if "skipped" in m:
            table.append(
                f"<tr><td>{html.escape(name)}</td><td colspan=3>"
                f"{html.escape(m['skipped'])}</td></tr>"
            )
            continue
        table.append(
            f"<tr><td>{html.escape(name)}</td><td>{fmt(m.get('tracks'))}</td>"
            f"<td>{fmt(m.get('accuracy'))}</td><td>{fmt(m.get('macro_f1'))}</td></tr>"
        )
    table.append("</table>")
    confusions = "".join(
        f"<h3>{html.escape(name)}</h3>{_confusion_html(m)}"
        for name, m in metrics["candidates"].items()
        if "confusion" in m
    )
    importances = model.feature_importances()
    imp = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{v:.3f}</td></tr>"
        for k, v in list(importances.items())[:15]
    )
    checks = "".join(
        f"<li><b>{'PASS' if c['passed'] else 'FAIL'}</b> {html.escape(c['check'])}: "
        f"{html.escape(str(c.get('detail', '')))}</li>"
        for c in report["checks"]
    )
    cnn_fit = (metrics["candidates"].get("cnn") or {}).get("fit") or {}
    cnn_text = ""
    if cnn_fit:
        stopping = (
            f"; early stopping on the loss of {cnn_fit['validation_tracks']} training tracks"
            f" held out from the fit kept epoch {cnn_fit['best_epoch']}"
            if cnn_fit.get("validation_tracks")
            else "; no early stopping"
        )
        cnn_text = (
            f"<p>CNN fit: {cnn_fit['epochs_run']} epochs of at most"
            f" {metrics['config']['cnn']['epochs']} on {cnn_fit['fit_tracks']} tracks"
            f"{html.escape(stopping)}.</p>"
        )
    what = (
        "LightGBM on the 50 librosa summary features of features.track_audio"
        if model.kind == "gbm"
        else f"a small CNN over 64-band log-mel patches of {model.patch_frames} frames "
        "(mean of patch probabilities per track)"
    )
    page = f"""<!doctype html><html><head><meta charset="utf-8">
<title>Model card: {html.escape(record.name)} {html.escape(record.version)}</title>
<style>body{{font-family:sans-serif;max-width:1000px;margin:2em auto}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:2px 6px;font-size:13px}}
</style></head><body>
<h1>{html.escape(record.name)} {html.escape(record.version)}</h1>
<p>Status: <b>{html.escape(record.status)}</b>. Gate verdict:
<b>{html.escape(report["verdict"])}</b>.</p>
<h2>What it is</h2><p>Genre of a catalogue track from its preview clip: {html.escape(what)}.
Classes: {html.escape(", ".join(model.classes))}. Chosen over the other candidate on held-out
tracks (accuracy, then macro F1).</p>
<h2>Data</h2><p>Labelled catalogue as of {day.isoformat()} with audio features
(extractor {html.escape(str(metrics.get("extractor_version")))}); split by track, seeded
({metrics["seed"]}), {metrics["holdout_share"]:.0%} held out:
{metrics["rows"]["train"]} training and {metrics["rows"]["holdout"]} held-out tracks.</p>
{cnn_text}
<h2>Held-out metrics</h2>{"".join(table)}
<h2>Confusion matrices (rows = true genre)</h2>{confusions}
{"<h2>Feature importance (gain share)</h2><table>" + imp + "</table>" if imp else ""}
<h2>Promotion gate</h2><ul>{checks}</ul>
<h2>Limits</h2><p>Trained and measured on the catalogue's own labels; a genre absent from the
labelled catalogue can never be predicted. Clips are summarised from their first
{audio.AudioConfig().max_seconds:.0f} s.</p>
</body></html>"""
    path = record.artifact_path.parent / CARD_FILE
    path.write_text(page, encoding="utf-8")
    return path


# --------------------------------------------------------------------------- scoring

_SCORE_COLUMNS = (
    "track_id",
    "model_version",
    "genre",
    "probability",
    "top3",
    "model_name",
    "file_sha256",
    "dt",
    "run_id",
    "scored_at",
)
_UPSERT = (
    "INSERT INTO scores.track_genres SELECT * FROM pg_temp.track_genres_stage"
    " ON CONFLICT (track_id, model_version) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in _SCORE_COLUMNS[2:])
    + " WHERE excluded.dt >= scores.track_genres.dt"
)


def _scoring_run(
    conn, run_id: str, day: date, version, status: str, detail: str, rows: int, seconds: float
) -> None:
    conn.execute(
        "INSERT INTO scores.scoring_runs (run_id, dt, model_name, model_version, status,"
        " detail, rows, seconds, finished_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, now())"
        " ON CONFLICT (run_id, dt, model_name) DO UPDATE SET"
        " model_version = excluded.model_version, status = excluded.status,"
        " detail = excluded.detail, rows = excluded.rows, seconds = excluded.seconds,"
        " finished_at = excluded.finished_at",
        (run_id, day, MODEL_NAME, version, status, detail, rows, seconds),
    )


def score_genres(
    day: date,
    *,
    run_id: str,
    dsn: str | None = None,
    artifacts: Path | None = None,
    landing_root: Path | None = None,
) -> dict:
    """Predict the genre of the unlabelled catalogue (as of ``day``) with the model that was
    champion when ``day`` closed, into ``scores.track_genres``. Without a champion the run
    is recorded as skipped in ``scores.scoring_runs`` and nothing else changes."""
    import pyarrow as pa

    started = time.perf_counter()
    target = warehouse.ensure_migrated(dsn)
    record = registry.champion(MODEL_NAME, day_end(day), dsn=target)
    if record is None:
        why = f"no genre model was champion when {day} closed: train one (encore train genre)"
        with warehouse.connect(target) as conn, conn.transaction():
            _scoring_run(conn, run_id, day, None, "skipped", why, 0, 0.0)
        log.info("genre scoring for %s skipped: %s", day, why)
        return {"day": day.isoformat(), "status": "skipped", "reason": why, "tracks": 0}
    model = registry.load_model(record)
    if not isinstance(model, GenreModel):
        raise registry.RegistryError(f"{record.artifact_path} does not hold a genre model")
    frame = load_tracks(target, day, labelled=False)
    missing_audio = 0
    if model.needs_audio and len(frame):
        mels = load_logmels(frame, artifacts=artifacts, landing_root=landing_root)
        keep = [m is not None for m in mels]
        missing_audio = len(keep) - sum(keep)
        frame = frame[keep].reset_index(drop=True)
        mels = [m for m in mels if m is not None]
    else:
        mels = None
    probs = model.predict_proba(frame, mels) if len(frame) else np.zeros((0, len(model.classes)))
    order = np.argsort(-probs, axis=1, kind="stable")[:, :3]
    classes = np.asarray(model.classes)
    n = len(frame)
    now = datetime.now(UTC)
    top3 = [
        json.dumps(
            [
                {"genre": str(classes[j]), "probability": round(float(probs[i, j]), 6)}
                for j in order[i]
            ]
        )
        for i in range(n)
    ]
    table = pa.table(
        {
            "track_id": pa.array(frame["track_id"].tolist() if n else [], pa.string()),
            "model_version": pa.array([record.version] * n, pa.string()),
            "genre": pa.array([str(classes[order[i, 0]]) for i in range(n)], pa.string()),
            "probability": pa.array(
                [float(np.clip(probs[i, order[i, 0]], 0.0, 1.0)) for i in range(n)], pa.float64()
            ),
            "top3": pa.array(top3, pa.string()),
            "model_name": pa.array([MODEL_NAME] * n, pa.string()),
            "file_sha256": pa.array(frame["file_sha256"].tolist() if n else [], pa.string()),
            "dt": pa.array([day] * n, pa.date32()),
            "run_id": pa.array([run_id] * n, pa.string()),
            "scored_at": pa.array([now] * n, pa.timestamp("us", tz="UTC")),
        }
    )
    with warehouse.connect(target) as conn, conn.transaction():
        conn.execute(
            "SELECT pg_advisory_xact_lock(%s)", (warehouse.lock_key("encore.track_genres"),)
        )
        if n:
            conn.execute(
                "CREATE TEMP TABLE track_genres_stage (LIKE scores.track_genres) ON COMMIT DROP"
            )
            warehouse.copy_arrow(conn, "pg_temp.track_genres_stage", table, _SCORE_COLUMNS)
            conn.execute(_UPSERT)
        detail = f"{n} unlabelled tracks scored" + (
            f"; {missing_audio} skipped without a decodable clip" if missing_audio else ""
        )
        _scoring_run(
            conn, run_id, day, record.version, "scored", detail, n, time.perf_counter() - started
        )
    counts = pd.Series(table.column("genre").to_pylist()).value_counts().to_dict() if n else {}
    log.info("genre scores for %s: %d tracks with %s %s", day, n, record.version, counts)
    return {
        "day": day.isoformat(),
        "status": "scored",
        "model_version": record.version,
        "kind": model.kind,
        "tracks": n,
        "missing_audio": missing_audio,
        "genres": {str(k): int(v) for k, v in counts.items()},
        "seconds": round(time.perf_counter() - started, 2),
    }
