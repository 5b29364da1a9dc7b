"""HTML model cards: one self-contained page per trained model, beside its artifact.

ROC, calibration and lift plots per horizon (matplotlib, Agg backend, embedded as base64
PNG), feature importances, the training window and splits, holdout metrics next to the
baseline and the champion, the data checks and the gate's verdict.
"""

from __future__ import annotations

import base64
import html
import io
import json
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

CARD_FILE = "model_card.html"


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _plots(y: np.ndarray, p: np.ndarray, base: np.ndarray | None, horizon: int) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    ax = axes[0]
    for label, scores in (("model", p), ("baseline", base)):
        if scores is not None and 0 < y.sum() < len(y):
            fpr, tpr, _ = roc_curve(y, scores)
            ax.plot(fpr, tpr, label=label)
    ax.plot([0, 1], [0, 1], ":", color="grey")
    ax.set(title=f"ROC, {horizon} days", xlabel="false positive rate", ylabel="true positive rate")
    ax.legend(loc="lower right")
    ax = axes[1]
    bins = np.minimum((p * 10).astype(int), 9)
    xs = [p[bins == b].mean() for b in range(10) if (bins == b).any()]
    ys = [y[bins == b].mean() for b in range(10) if (bins == b).any()]
    ax.plot([0, 1], [0, 1], ":", color="grey")
    ax.plot(xs, ys, "o-")
    ax.set(title=f"Calibration, {horizon} days", xlabel="predicted", ylabel="observed")
    ax = axes[2]
    order = np.argsort(-p, kind="stable")
    rate = y.mean() if len(y) else 0
    deciles = np.array_split(y[order], 10)
    lifts = [d.mean() / rate if rate and len(d) else 0 for d in deciles]
    ax.bar(range(1, 11), lifts)
    ax.axhline(1.0, color="grey", linestyle=":")
    ax.set(title=f"Lift by decile, {horizon} days", xlabel="decile (1 = riskiest)", ylabel="lift")
    return _png(fig)


def _importance_plot(importances: dict[str, float], top: int = 20) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    items = list(importances.items())[:top][::-1]
    fig, ax = plt.subplots(figsize=(7, 0.28 * len(items) + 1))
    ax.barh([k for k, _ in items], [v for _, v in items])
    ax.set(title="Feature importance (share, averaged over members)")
    return _png(fig)


def _fmt(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.4f}"
    return html.escape(str(v))


def _metrics_table(rows: dict[str, dict], horizons) -> str:
    cols = ("rows", "positives", "roc_auc", "pr_auc", "brier", "ece", "lift_top_decile")
    out = [
        "<table><tr><th>model</th><th>horizon</th>"
        + "".join(f"<th>{c}</th>" for c in cols)
        + "</tr>"
    ]
    for name, metrics in rows.items():
        for h in horizons:
            m = (metrics or {}).get(str(h))
            if not m:
                out.append(
                    f"<tr><td>{html.escape(name)}</td><td>{h}</td>"
                    f"<td colspan={len(cols)}>not evaluated</td></tr>"
                )
                continue
            out.append(
                f"<tr><td>{html.escape(name)}</td><td>{h}</td>"
                + "".join(f"<td>{_fmt(m.get(c))}</td>" for c in cols)
                + "</tr>"
            )
    out.append("</table>")
    return "".join(out)


def write_model_card(
    record,
    model,
    holdout: pd.DataFrame,
    probabilities: pd.DataFrame,
    *,
    baseline=None,
    gate_report: dict,
    validation: dict,
    day: date,
) -> Path:
    """Write ``model_card.html`` beside the record's artifact; returns its path."""
    from ml_tasks import labels

    metrics = record.metrics
    horizons = list(model.horizons)
    base_probs = baseline.predict(holdout) if baseline is not None else {}
    sections = []
    for h in horizons:
        col = labels.label_column(h)
        mask = (
            (holdout["dt"] <= labels.last_fully_labelled_day(h, day)) & holdout[col].notna()
        ).to_numpy()
        if mask.sum() == 0:
            sections.append(
                f"<h3>{h} days</h3><p>No holdout row has a known {h}-day label "
                "yet: not evaluated.</p>"
            )
            continue
        y = holdout[col].to_numpy()[mask].astype(int)
        p = probabilities[f"p_churn_{h}d"].to_numpy()[mask]
        b = base_probs.get(h)
        img = _plots(y, p, b[mask] if b is not None else None, h)
        sections.append(f"<h3>{h} days</h3><img src='data:image/png;base64,{img}'/>")
    rows = {
        f"chosen ({metrics.get('chosen')})": {str(h): metrics.get(str(h)) for h in horizons},
        "baseline (logistic recency/frequency)": metrics.get("baseline") or {},
    }
    for name, m in (metrics.get("candidates") or {}).items():
        rows[f"candidate {name}"] = m
    if metrics.get("champion"):
        rows[f"champion {metrics['champion'].get('version')}"] = metrics["champion"]
    checks = "".join(
        f"<li><b>{'PASS' if c['passed'] else 'FAIL'}</b> {html.escape(c['check'])}: "
        f"{html.escape(str(c.get('detail', '')))}</li>"
        for c in gate_report["checks"]
    )
    importance = _importance_plot(model.feature_importances())
    page = f"""<!doctype html><html><head><meta charset="utf-8">
<title>Model card: {html.escape(record.name)} {html.escape(record.version)}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:2px 6px;font-size:13px}}
</style></head><body>
<h1>{html.escape(record.name)} {html.escape(record.version)}</h1>
<p>Status: <b>{html.escape(record.status)}</b>. Gate verdict:
<b>{html.escape(gate_report["verdict"])}</b>.</p>
<h2>What it is</h2>
<p>Discrete-time hazard model over day bands {list(model.band_edges)} ({html.escape(model.kind)}),
giving P(churn within H) for H in {horizons}, non-decreasing in H by construction; calibrated
per horizon on later scoring dates ({metrics.get("calibrated_horizons")} calibrated), then made
monotone again with a running maximum. Monotone rows on the holdout:
{_fmt(metrics.get("monotone_share"))}.</p>
<h2>Training window</h2><p>Training date {day.isoformat()} (labels censored as of its end).
Feature service {html.escape(record.feature_service)}.</p>
<pre>{html.escape(json.dumps(metrics.get("splits"), indent=1))}</pre>
<pre>{html.escape(json.dumps(metrics.get("rows")))}</pre>
<h2>Holdout metrics</h2>{_metrics_table(rows, horizons)}
<h2>Plots per horizon</h2>{"".join(sections)}
<h2>Feature importances</h2><img src='data:image/png;base64,{importance}'/>
<h2>Data checks</h2><p>Feature days used: {validation.get("days")}; failed validation:
{html.escape(str(validation.get("failed_days")))}; without a verdict:
{html.escape(str(validation.get("missing_days")))}.</p>
<h2>Promotion gate</h2><ul>{checks}</ul>
</body></html>"""
    path = record.artifact_path.parent / CARD_FILE
    path.write_text(page, encoding="utf-8")
    return path
