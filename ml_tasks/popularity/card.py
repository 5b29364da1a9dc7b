"""The popularity model card: one self-contained HTML page beside the artifact.

Per horizon: holdout WAPE of each candidate (LightGBM, LSTM, blend), of the model kept, of
the naive baseline and of the champion it was compared with, also on new releases; a
forecast-vs-actual plot on the holdout (log scales) and the LightGBM feature importances;
the splits, the data checks and the gate's verdict.
"""

from __future__ import annotations

import html
import json
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

from ml_tasks.model_card import CARD_FILE, _png
from ml_tasks.popularity.data import naive_column, target_column
from ml_tasks.popularity.model import PopularityModel, prediction_column


def _f(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.4f}"
    return html.escape(str(v))


def _plot(frame: pd.DataFrame, pred: np.ndarray, h: int) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    y = frame[target_column(h)].to_numpy(dtype=float)
    naive = frame[naive_column(h)].to_numpy(dtype=float)
    fig, ax = plt.subplots(figsize=(4.2, 4))
    ax.scatter(y + 1, naive + 1, s=6, alpha=0.35, label="naive", color="grey")
    ax.scatter(y + 1, pred + 1, s=6, alpha=0.5, label="model")
    top = max(float(y.max(initial=0)), float(pred.max(initial=0))) + 2
    ax.plot([1, top], [1, top], ":", color="black")
    ax.set(
        xscale="log",
        yscale="log",
        title=f"{h} days: forecast vs actual (+1)",
        xlabel="actual plays",
        ylabel="forecast",
    )
    ax.legend(loc="upper left")
    return _png(fig)


def _importance(imp: dict[str, float], h: int, top: int = 15) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    items = list(imp.items())[:top][::-1]
    fig, ax = plt.subplots(figsize=(5, 0.28 * len(items) + 1))
    ax.barh([k for k, _ in items], [v for _, v in items])
    ax.set(title=f"LightGBM gain share, {h} days")
    return _png(fig)


def write_model_card(
    record,
    model: PopularityModel,
    holdouts: dict[int, pd.DataFrame],
    *,
    gate_report: dict,
    validation: dict,
    day: date,
    served: dict[int, pd.DataFrame] | None = None,
) -> Path:
    """Write ``model_card.html`` beside the record's artifact; returns its path.
    ``served``: ``model.predict`` of each holdout (at least up to its horizon), when already
    made."""
    metrics = record.metrics
    champion = metrics.get("champion") or {}
    head = (
        "<tr><th>horizon</th><th>kept</th><th>LightGBM</th><th>LSTM</th><th>blend</th>"
        "<th>kept (served)</th><th>naive</th><th>kept / naive</th><th>champion</th>"
        "<th>bias</th><th>new releases: kept</th><th>new releases: naive</th><th>rows</th></tr>"
    )
    rows = []
    sections = []
    for h in model.horizons:
        m = metrics.get(str(h)) or {}
        c = m.get("candidates") or {}
        n = m.get("new_releases") or {}
        rows.append(
            f"<tr><td>{h}</td><td>{_f(m.get('chosen'))}</td><td>{_f(c.get('lightgbm'))}</td>"
            f"<td>{_f(c.get('lstm'))}</td><td>{_f(c.get('blend'))}</td><td>{_f(m.get('wape'))}</td>"
            f"<td>{_f(m.get('naive_wape'))}</td><td>{_f(m.get('ratio_to_naive'))}</td>"
            f"<td>{_f((champion.get(str(h)) or {}).get('wape'))}</td><td>{_f(m.get('bias'))}</td>"
            f"<td>{_f(n.get('wape'))}</td><td>{_f(n.get('naive_wape'))}</td>"
            f"<td>{_f(m.get('rows'))}</td></tr>"
        )
        frame = holdouts.get(h)
        if frame is not None and len(frame):
            forecast = served[h] if served and h in served else model.predict(frame, upto=h)
            pred = forecast[prediction_column(h)].to_numpy()
            imgs = f"<img src='data:image/png;base64,{_plot(frame, pred, h)}'/>"
            imp = model.importances(h)
            if imp:
                imgs += f"<img src='data:image/png;base64,{_importance(imp, h)}'/>"
            sections.append(f"<h3>{h} days</h3>{imgs}")
    checks = "".join(
        f"<li><b>{'PASS' if c['passed'] else 'FAIL'}</b> {html.escape(c['check'])}: "
        f"{html.escape(str(c.get('detail', '')))}</li>"
        for c in gate_report["checks"]
    )
    page = f"""<!doctype html><html><head><meta charset="utf-8">
<title>Model card: {html.escape(record.name)} {html.escape(record.version)}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:2px 6px;font-size:13px}}
</style></head><body>
<h1>{html.escape(record.name)} {html.escape(record.version)}</h1>
<p>Status: <b>{html.escape(record.status)}</b>. Gate verdict:
<b>{html.escape(gate_report["verdict"])}</b>.</p>
<h2>What it is</h2>
<p>Forecast plays per track over the next 1, 7 and 30 days (net of plays flagged as stream
fraud). Per horizon, a global LightGBM model on lags, catalogue and audio features and a
TensorFlow LSTM over the daily play sequence (plus static features) were trained; the one
with the lower holdout WAPE (or their average) serves: {html.escape(model.kind)}. Forecasts are
made non-decreasing in the horizon. The naive baseline forecasts the plays of the last H
days. New releases: tracks released less than 14 days before the scoring date (or within
the horizon); the models see their age, the plays since release and the artist's momentum
instead of a long history.</p>
<h2>Training window</h2><p>Training date {day.isoformat()} (targets known as of its end).
Feature service {html.escape(record.feature_service)}; {metrics.get("features")} features
({metrics.get("audio_features")} audio).</p>
<pre>{html.escape(json.dumps(metrics.get("splits"), indent=1))}</pre>
<pre>{html.escape(json.dumps(metrics.get("rows")))}</pre>
<h2>Holdout WAPE (sum |y - forecast| / sum y; lower is better)</h2>
<table>{head}{"".join(rows)}</table>
<h2>Per horizon</h2>{"".join(sections)}
<h2>Data checks</h2><p>Feature days used: {validation.get("days")}; failed validation:
{html.escape(str(validation.get("failed_days")))}; without a verdict:
{html.escape(str(validation.get("missing_days")))}.</p>
<h2>Promotion gate</h2><ul>{checks}</ul>
</body></html>"""
    path = record.artifact_path.parent / CARD_FILE
    path.write_text(page, encoding="utf-8")
    return path
