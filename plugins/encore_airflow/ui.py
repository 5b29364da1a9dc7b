"""The Encore page of the Airflow UI: a small FastAPI app the api-server mounts.

Server-rendered HTML (no JavaScript build): per model family the champion and the latest
candidates with their holdout metrics and gate verdict (``ml.model_registry``), the latest
training, scoring, validation and monitoring runs, and links that serve model cards,
monitoring reports and Great Expectations Data Docs from the artifacts folder. ``/api/registry``
and ``/api/runs`` give the same figures as JSON for scripts.

Airflow imports plugins when its processes start, so this module imports only FastAPI at top
level; the warehouse code (psycopg) and Airflow's auth are imported on first request.
Every route requires a signed-in Airflow user (the UI's session cookie or a bearer token).
"""

from __future__ import annotations

import html
import logging
from collections.abc import Callable, Iterable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse

log = logging.getLogger(__name__)

#: Model families always listed, in this order (others found in the registry follow).
FAMILIES = ("churn", "genre", "popularity")
#: How many candidates and retired versions of a family the page lists (newest first).
CANDIDATES_SHOWN = 5
RETIRED_SHOWN = 3
#: Rows of each run history the page lists.
RUNS_SHOWN = 12
REPORTS_SHOWN = 7
#: A UI read that takes longer than this is cancelled by the warehouse.
STATEMENT_TIMEOUT_MS = 10_000

#: The model card's file name beside each artifact (ml_tasks.model_card.CARD_FILE, which
#: is not imported here because that module pulls in pandas).
CARD_FILE = "model_card.html"
#: GX Data Docs site inside the artifacts folder (the file project of ml_tasks.validation).
DATA_DOCS_DIR = Path("gx") / "uncommitted" / "data_docs" / "local_site"
#: File types the Data Docs route serves.
DATA_DOCS_SUFFIXES = frozenset(
    {".html", ".css", ".js", ".json", ".png", ".gif", ".jpg", ".svg", ".ico"}
    | {".otf", ".ttf", ".woff", ".woff2"}
)

#: Per-horizon metrics shown when present (churn: classification; popularity: WAPE).
HORIZON_METRICS = (
    "roc_auc",
    "pr_auc",
    "ece",
    "brier",
    "lift_top_decile",
    "wape",
    "naive_wape",
    "ratio_to_naive",
)
#: Whole-model metrics shown when present (genre).
SCALAR_METRICS = ("accuracy", "macro_f1")

_REGISTRY_SQL = """
WITH ranked AS (
    SELECT model_name, version, status, horizons, train_start, train_end, trained_at,
           feature_service, metrics, promoted_at, retired_at, gate_report, model_card_uri,
           run_id,
           row_number() OVER (PARTITION BY model_name, status
                              ORDER BY trained_at DESC, version DESC) AS rank,
           count(*) OVER (PARTITION BY model_name, status) AS of_status
    FROM ml.model_registry
)
SELECT * FROM ranked
WHERE status = 'champion' OR (status = 'candidate' AND rank <= %(candidates)s)
   OR (status = 'retired' AND rank <= %(retired)s)
ORDER BY model_name, trained_at DESC, version DESC
"""

_RUNS_SQL = {
    "training": (
        "SELECT run_id, model_name, training_date, started_at, finished_at, status, version,"
        " rows_train, rows_holdout, seconds, error FROM ml.training_runs"
        " ORDER BY started_at DESC LIMIT %(limit)s"
    ),
    "scoring": (
        "SELECT run_id, dt, model_name, model_version, status, detail, rows, seconds,"
        " finished_at FROM scores.scoring_runs ORDER BY finished_at DESC LIMIT %(limit)s"
    ),
    "validation": (
        "SELECT * FROM (SELECT DISTINCT ON (suite) suite, dt, run_id, success, evaluated,"
        " failed, data_docs_path, validated_at FROM monitoring.validation_results"
        " ORDER BY suite, dt DESC, validated_at DESC) latest ORDER BY suite"
    ),
    "reports": (
        "SELECT dt, path, summary, run_id, created_at FROM monitoring.reports"
        " ORDER BY dt DESC LIMIT %(reports)s"
    ),
    "deadline_misses": (
        "SELECT dt, deadline_time, missing, dag_id, run_id, run_type, recorded_at"
        " FROM monitoring.deadline_misses ORDER BY deadline_time DESC LIMIT %(reports)s"
    ),
}


class Unavailable(RuntimeError):
    """The warehouse could not be read (unreachable, misconfigured)."""


# --------------------------------------------------------------------------- access


async def require_airflow_user(request: Request) -> None:
    """Let only users signed in to Airflow through: its session cookie or a bearer token.

    Delegates to the api-server's own ``get_user`` (401 without credentials, 403 for an
    invalid token), imported here so that loading the plugin stays cheap.
    """
    from airflow.api_fastapi.core_api.security import get_user
    from fastapi.security import HTTPAuthorizationCredentials
    from fastapi.security.utils import get_authorization_scheme_param

    scheme, token = get_authorization_scheme_param(request.headers.get("Authorization"))
    credentials = (
        HTTPAuthorizationCredentials(scheme=scheme, credentials=token) if scheme and token else None
    )
    await get_user(request, _oauth_token=None, bearer_credentials=credentials)


def airflow_dsn() -> str:
    """The warehouse as Airflow sees it: connection ``warehouse``, else Encore's settings."""
    from encore_airflow.hooks import WarehouseHook

    return WarehouseHook().get_dsn()


def artifacts_root() -> Path:
    """The artifacts folder (``ENCORE_ARTIFACTS``), resolved."""
    from ml_tasks.settings import get_settings

    return get_settings().artifacts.resolve()


def inside(root: Path, candidate: str | Path | None) -> Path | None:
    """``candidate`` as an existing file inside ``root`` (symlinks resolved), else None."""
    if not candidate:
        return None
    text = str(candidate)
    if text.startswith("file://"):
        text = text[len("file://") :]
    if "\x00" in text:
        return None
    path = Path(text)
    path = (path if path.is_absolute() else root / path).resolve()
    if not path.is_relative_to(root) or not path.is_file():
        return None
    return path


# --------------------------------------------------------------------------- reading


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def _rows(conn: Any, query: str, params: dict[str, Any]) -> list[dict[str, Any]] | None:
    """Rows of ``query`` as dicts, or None when its table does not exist (not migrated)."""
    import psycopg
    from psycopg.rows import dict_row

    try:
        with conn.cursor(row_factory=dict_row) as cur:
            cur.execute(query, params)
            return list(cur.fetchall())
    except psycopg.errors.UndefinedTable:
        return None


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def key_metrics(metrics: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The headline holdout figures of a registry row, one row per horizon (or one row).

    Per horizon (``metrics["7"]``, ...) the metrics of :data:`HORIZON_METRICS` present, with
    the baseline's value of the first of them; otherwise the whole-model metrics of
    :data:`SCALAR_METRICS` with the baseline's.
    """
    metrics = metrics or {}
    baseline = metrics.get("baseline") if isinstance(metrics.get("baseline"), dict) else {}
    out: list[dict[str, Any]] = []
    horizons = sorted((k for k in metrics if k.isdigit()), key=int)
    for h in horizons:
        m = metrics[h] if isinstance(metrics[h], dict) else {}
        row: dict[str, Any] = {"scope": f"{h} d"}
        row.update({k: _number(m[k]) for k in HORIZON_METRICS if _number(m.get(k)) is not None})
        if len(row) == 1:
            row["note"] = "not evaluated"
        else:
            head = next(k for k in HORIZON_METRICS if k in row)
            base = baseline.get(h) if isinstance(baseline.get(h), dict) else {}
            if _number(base.get(head)) is not None:
                row[f"baseline {head}"] = _number(base[head])
        out.append(row)
    if not out:
        row = {"scope": "holdout"}
        row.update(
            {k: _number(metrics[k]) for k in SCALAR_METRICS if _number(metrics.get(k)) is not None}
        )
        for k in SCALAR_METRICS:
            if k in row and _number(baseline.get(k)) is not None:
                row[f"baseline {k}"] = _number(baseline[k])
                break
        if len(row) > 1:
            out.append(row)
    return out


def _chosen(metrics: dict[str, Any]) -> str | None:
    chosen = metrics.get("chosen")
    if isinstance(chosen, dict):
        return ", ".join(f"{h} d {v}" for h, v in sorted(chosen.items(), key=lambda x: x[0]))
    return str(chosen) if chosen else None


def _gate(report: dict[str, Any] | None) -> dict[str, Any] | None:
    if not report:
        return None
    return {
        "passed": bool(report.get("passed")),
        "verdict": report.get("verdict") or ("promote" if report.get("passed") else "keep"),
        "reasons": [str(r) for r in report.get("reasons") or []],
        "decided_at": report.get("decided_at"),
    }


def _model(row: dict[str, Any]) -> dict[str, Any]:
    metrics = row["metrics"] or {}
    return {
        "name": row["model_name"],
        "version": row["version"],
        "status": row["status"],
        "trained_at": row["trained_at"],
        "promoted_at": row["promoted_at"],
        "retired_at": row["retired_at"],
        "train_start": row["train_start"],
        "train_end": row["train_end"],
        "horizons": list(row["horizons"] or []),
        "feature_service": row["feature_service"],
        "run_id": row["run_id"],
        "chosen": _chosen(metrics),
        "key_metrics": key_metrics(metrics),
        "gate": _gate(row["gate_report"]),
        "card": (
            f"cards/{quote(row['model_name'], safe='')}/{quote(row['version'], safe='')}"
            if row["model_card_uri"]
            else None
        ),
        "metrics": metrics,
    }


def read_overview(dsn: str) -> dict[str, Any]:
    """Everything the page shows, read from the warehouse in one connection."""
    from ml_tasks import warehouse

    params = {
        "candidates": CANDIDATES_SHOWN,
        "retired": RETIRED_SHOWN,
        "limit": RUNS_SHOWN,
        "reports": REPORTS_SHOWN,
    }
    import psycopg

    try:
        with warehouse.connect(dsn, autocommit=True) as conn:
            conn.execute(f"SET statement_timeout = {STATEMENT_TIMEOUT_MS}")
            registry_rows = _rows(conn, _REGISTRY_SQL, params)
            runs = {key: _rows(conn, query, params) for key, query in _RUNS_SQL.items()}
    except warehouse.WarehouseError as exc:
        raise Unavailable(str(exc)) from exc
    except psycopg.Error as exc:  # e.g. the statement timeout: say so on the page
        raise Unavailable(f"the warehouse refused a read: {exc}".strip()) from exc
    families: dict[str, dict[str, Any]] = {
        name: {"champion": None, "candidates": [], "retired": [], "counts": {}} for name in FAMILIES
    }
    for row in registry_rows or []:
        family = families.setdefault(
            row["model_name"], {"champion": None, "candidates": [], "retired": [], "counts": {}}
        )
        family["counts"][row["status"]] = row["of_status"]
        model = _model(row)
        if row["status"] == "champion":
            family["champion"] = model
        else:
            family["candidates" if row["status"] == "candidate" else "retired"].append(model)
    return {
        "migrated": registry_rows is not None,
        "has_models": bool(registry_rows),
        "families": families,
        "runs": runs,
        "generated_at": datetime.now(UTC),
    }


# --------------------------------------------------------------------------- rendering

_CSS = """
:root { color-scheme: light dark; --line: #8884; --muted: #888; --ok: #1a7f37; --bad: #c62828; }
body { font-family: system-ui, sans-serif; margin: 1.2em 1.6em; font-size: 14px; }
h1 { font-size: 1.5em; margin: 0 0 .2em; } h2 { font-size: 1.2em; margin: 1.6em 0 .5em; }
h3 { font-size: 1.05em; margin: 1.2em 0 .4em; }
table { border-collapse: collapse; margin: .3em 0 .8em; }
th, td { border: 1px solid var(--line); padding: 3px 7px; text-align: left; vertical-align: top; }
th { font-weight: 600; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.muted { color: var(--muted); } .ok { color: var(--ok); font-weight: 600; }
.bad { color: var(--bad); font-weight: 600; } .note { padding: .6em .9em;
  border-left: 4px solid #f0a020; background: #f0a02018; margin: .8em 0; max-width: 60em; }
.family { border: 1px solid var(--line); border-radius: 6px; padding: .2em 1em .6em;
  margin: .8em 0; } code { font-size: .95em; } ul { margin: .2em 0; padding-left: 1.2em; }
.family ul { min-width: 16em; }
nav a { margin-right: 1em; } code, .t { white-space: nowrap; }
"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _when(value: Any) -> str:
    if isinstance(value, datetime):
        return f'<span class="t">{value.astimezone(UTC):%Y-%m-%d %H:%M} UTC</span>'
    return _e(value) if value is not None else "–"


def _secs(value: Any) -> str:
    return f"{value:.1f}" if isinstance(value, int | float) else "–"


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1000 else f"{value:,.0f}"
    return _e(value)


def _link(href: str | None, text: str) -> str:
    return f'<a href="{_e(href)}">{_e(text)}</a>' if href else '<span class="muted">–</span>'


def _table(headers: Iterable[str], rows: Iterable[Iterable[str]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _metrics_html(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return '<span class="muted">no holdout metrics</span>'
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in ("scope", "note") and k not in columns]
    out = []
    for row in rows:
        cells = [_e(row["scope"]).replace(" ", "&nbsp;")]
        if "note" in row:
            cells.append(f'<span class="muted">{_e(row["note"])}</span>')
            cells += [""] * (len(columns) - 1)
        else:
            cells += [_fmt(row.get(c)) for c in columns]
        out.append(cells)
    return _table(["", *columns], out)


def _gate_html(gate: dict[str, Any] | None) -> str:
    if gate is None:
        return '<span class="muted">no verdict recorded</span>'
    mark = "ok" if gate["passed"] else "bad"
    reasons = "".join(f"<li>{_e(r)}</li>" for r in gate["reasons"])
    return f'<span class="{mark}">{_e(gate["verdict"])}</span><ul>{reasons}</ul>'


def _models_table(models: list[dict[str, Any]]) -> str:
    rows = [
        [
            f"<code>{_e(m['version'])}</code>",
            _e(m["status"]),
            _when(m["trained_at"]),
            _when(m["promoted_at"]),
            _e(m["chosen"] or "–"),
            _metrics_html(m["key_metrics"]),
            _gate_html(m["gate"]),
            _link(m["card"], "model card"),
        ]
        for m in models
    ]
    headers = ["version", "status", "trained", "promoted", "chosen", "holdout", "gate", "card"]
    return _table(headers, rows)


def _family_html(name: str, family: dict[str, Any]) -> str:
    counts = family["counts"]
    parts = [f'<div class="family"><h3>{_e(name)}</h3>']
    champion = family["champion"]
    if champion:
        window = f"{_e(champion['train_start'])} … {_e(champion['train_end'])}"
        parts.append(
            f"<p>Champion <code>{_e(champion['version'])}</code>, promoted "
            f"{_when(champion['promoted_at'])}; trained {_when(champion['trained_at'])} on "
            f"{window} ({_e(champion['feature_service'])}). "
            + (_link(champion["card"], "Model card") if champion["card"] else "No model card.")
            + "</p>"
        )
        parts.append(_models_table([champion]))
    elif family["candidates"] or family["retired"]:
        parts.append('<p class="bad">No champion: scoring skips this family.</p>')
    else:
        parts.append(
            f'<p class="muted">No {_e(name)} model is registered yet '
            f"(<code>encore train {_e(name)} --date D</code> or the retrain DAG).</p>"
        )
    if family["candidates"]:
        total = counts.get("candidate", len(family["candidates"]))
        parts.append(
            f"<p>Candidates (newest {len(family['candidates'])} of {total}, not serving):</p>"
        )
        parts.append(_models_table(family["candidates"]))
    if family["retired"]:
        total = counts.get("retired", len(family["retired"]))
        parts.append(f"<p>Recently retired ({len(family['retired'])} of {total}):</p>")
        parts.append(_models_table(family["retired"]))
    parts.append("</div>")
    return "".join(parts)


def _status_html(status: str) -> str:
    good = status in ("succeeded", "scored")
    bad = status in ("failed",)
    css = "ok" if good else "bad" if bad else "muted" if status == "skipped" else ""
    return f'<span class="{css}">{_e(status)}</span>'


def _deadlines_html(misses: list[dict[str, Any]] | None) -> str:
    parts = ['<h2 id="deadlines">Missed deadlines (monitoring.deadline_misses)</h2>']
    if not misses:
        parts.append(
            '<p class="muted">No missed deadline: every day <code>nightly_deadline</code>'
            " watched was scored and monitored on time.</p>"
        )
        return "".join(parts)
    parts.append(
        _table(
            ["day", "due", "missing then", "run", "recorded"],
            [
                [
                    f'<span class="bad">{_e(r["dt"] or "?")}</span>',
                    _when(r["deadline_time"]),
                    _e(r["missing"]),
                    f"<code>{_e(r['dag_id'])}</code> {_e(r['run_type'])} "
                    f"<code>{_e(r['run_id'])}</code>",
                    _when(r["recorded_at"]),
                ]
                for r in misses
            ],
        )
    )
    return "".join(parts)


def _runs_html(runs: dict[str, list[dict[str, Any]] | None], docs_index: str | None) -> str:
    parts = [_deadlines_html(runs.get("deadline_misses")), "<h2>Latest runs</h2>"]
    training = runs.get("training")
    parts.append("<h3>Training (ml.training_runs)</h3>")
    if training:
        parts.append(
            _table(
                ["started", "model", "training date", "status", "version", "rows", "s", "error"],
                [
                    [
                        _when(r["started_at"]),
                        _e(r["model_name"]),
                        _e(r["training_date"]),
                        _status_html(r["status"]),
                        f"<code>{_e(r['version'] or '–')}</code>",
                        f"{_fmt(r['rows_train'])} / {_fmt(r['rows_holdout'])}",
                        _secs(r["seconds"]),
                        _e(r["error"] or ""),
                    ]
                    for r in training
                ],
            )
        )
    else:
        parts.append('<p class="muted">No training run yet.</p>')
    parts.append("<h3>Scoring (scores.scoring_runs)</h3>")
    if runs.get("scoring"):
        parts.append(
            _table(
                ["finished", "day", "model", "version", "status", "rows", "s", "detail"],
                [
                    [
                        _when(r["finished_at"]),
                        _e(r["dt"]),
                        _e(r["model_name"]),
                        f"<code>{_e(r['model_version'] or '–')}</code>",
                        _status_html(r["status"]),
                        _fmt(r["rows"]),
                        _secs(r["seconds"]),
                        _e(r["detail"]),
                    ]
                    for r in runs["scoring"] or []
                ],
            )
        )
    else:
        parts.append('<p class="muted">No scoring run yet.</p>')
    parts.append("<h3>Monitoring reports (monitoring.reports)</h3>")
    if runs.get("reports"):
        rows = []
        for r in runs["reports"] or []:
            summary = r["summary"] or {}
            fraud = summary.get("fraud")
            flagged = fraud.get("flagged") if isinstance(fraud, dict) else None
            rows.append(
                [
                    _link(f"reports/{r['dt']}", str(r["dt"])),
                    _e(", ".join(summary.get("drift_alert") or []) or "none"),
                    _e(", ".join(summary.get("drift_warn") or []) or "none"),
                    _fmt(flagged),
                    _e(len(summary.get("realized") or [])),
                    _when(r["created_at"]),
                ]
            )
        parts.append(
            _table(
                ["day", "drift alerts", "drift warnings", "fraud flags", "realized", "written"],
                rows,
            )
        )
    else:
        parts.append('<p class="muted">No monitoring report yet.</p>')
    parts.append("<h3>Data validation (monitoring.validation_results, latest per suite)</h3>")
    if runs.get("validation"):
        parts.append(
            _table(
                ["suite", "day", "verdict", "failed / evaluated", "validated", "Data Docs"],
                [
                    [
                        _e(r["suite"]),
                        _e(r["dt"]),
                        '<span class="ok">passed</span>'
                        if r["success"]
                        else '<span class="bad">failed</span>',
                        f"{_fmt(r['failed'])} / {_fmt(r['evaluated'])}",
                        _when(r["validated_at"]),
                        _link(r.get("docs"), "result"),
                    ]
                    for r in runs["validation"] or []
                ],
            )
        )
    else:
        parts.append('<p class="muted">No validation result yet.</p>')
    parts.append(
        f"<p>Great Expectations Data Docs: {_link(docs_index, 'index')}</p>"
        if docs_index
        else '<p class="muted">No Data Docs built yet.</p>'
    )
    return "".join(parts)


def _page(body: str, base: str) -> str:
    return (
        '<!doctype html><html><head><meta charset="utf-8">'
        f'<base href="{_e(base)}"><title>Encore</title><style>{_CSS}</style></head>'
        f"<body><h1>Encore</h1>{body}</body></html>"
    )


def render_page(overview: dict[str, Any], docs_index: str | None) -> str:
    """The Encore page of an overview from :func:`read_overview`."""
    parts = [
        '<nav><a href="#models">Models</a><a href="#deadlines">Missed deadlines</a>'
        '<a href="#runs">Latest runs</a>'
        '<a href="api/registry">registry JSON</a><a href="api/runs">runs JSON</a></nav>',
        f'<p class="muted">Read {_when(overview["generated_at"])}.</p>',
    ]
    if not overview["migrated"]:
        parts.append(
            '<p class="note">The warehouse has no Encore tables yet. Run '
            "<code>encore migrate</code> (or any Encore DAG, which migrates first), then "
            "ingest and train: this page fills in as the nightly chain runs.</p>"
        )
    elif not overview["has_models"]:
        parts.append(
            '<p class="note">No model is registered yet. Models appear here once '
            "<code>retrain_nightly</code> (or <code>encore train churn|genre|popularity "
            "--date D</code>) has trained one; scoring skips a family until it has a "
            "champion.</p>"
        )
    parts.append('<h2 id="models">Models (ml.model_registry)</h2>')
    parts += [_family_html(name, fam) for name, fam in overview["families"].items()]
    parts.append('<div id="runs"></div>')
    parts.append(_runs_html(overview["runs"], docs_index))
    return "".join(parts)


# --------------------------------------------------------------------------- the app


def _docs_link(root: Path, path: str | None) -> str | None:
    """The Data Docs route of a validation's page, if it is inside the Data Docs site."""
    site = (root / DATA_DOCS_DIR).resolve()
    found = inside(site, path) if path else None
    return f"datadocs/{found.relative_to(site).as_posix()}" if found else None


def create_app(*, dsn: Callable[[], str] | None = None) -> FastAPI:
    """The Encore FastAPI app. ``dsn`` returns the warehouse DSN (default: Airflow's
    ``warehouse`` connection, else Encore's settings)."""
    resolve = dsn or airflow_dsn
    app = FastAPI(
        title="Encore",
        description="Model registry, latest runs and reports of the Encore platform.",
        docs_url=None,
        redoc_url=None,
        dependencies=[Depends(require_airflow_user)],
    )

    def target() -> str:
        try:
            return resolve()
        except Exception as exc:  # a broken connection setting must not break the UI
            raise Unavailable(f"cannot resolve the warehouse connection: {exc}") from exc

    def overview() -> dict[str, Any]:
        data = read_overview(target())
        root = artifacts_root()
        for r in data["runs"].get("validation") or []:
            r["docs"] = _docs_link(root, r.get("data_docs_path"))
        return data

    def docs_index() -> str | None:
        found = inside(artifacts_root() / DATA_DOCS_DIR, "index.html")
        return "datadocs/index.html" if found else None

    @app.exception_handler(Unavailable)
    async def unavailable(request: Request, exc: Unavailable):
        log.warning("Encore page: warehouse unavailable: %s", exc)
        if request.url.path.rstrip("/").endswith(("/api/registry", "/api/runs")):
            return JSONResponse({"error": str(exc)}, status_code=503)
        base = request.scope.get("root_path", "") + "/"
        body = f'<p class="note">The warehouse cannot be read right now: {_e(exc)}</p>'
        return HTMLResponse(_page(body, base), status_code=503)

    @app.get("/", response_class=HTMLResponse, summary="The Encore page")
    def index(request: Request) -> HTMLResponse:
        base = request.scope.get("root_path", "") + "/"
        return HTMLResponse(_page(render_page(overview(), docs_index()), base))

    @app.get("/api/registry", summary="Champion, candidates and retired models per family")
    def api_registry() -> JSONResponse:
        data = overview()
        payload = {
            "generated_at": data["generated_at"],
            "migrated": data["migrated"],
            "has_models": data["has_models"],
            "families": data["families"],
        }
        return JSONResponse(_jsonable(payload))

    @app.get("/api/runs", summary="Latest training, scoring, validation and monitoring runs")
    def api_runs() -> JSONResponse:
        data = overview()
        payload = {"generated_at": data["generated_at"], "runs": data["runs"]}
        return JSONResponse(_jsonable(payload))

    @app.get("/cards/{name}/{version}", summary="The HTML model card of a registered model")
    def card(name: str, version: str) -> FileResponse:
        from ml_tasks import registry

        record = _lookup(lambda target: registry.get(name, version, dsn=target))
        if record is None:
            raise HTTPException(404, f"{name} {version} is not registered")
        root = artifacts_root()
        path = inside(root, record.model_card_uri) or inside(
            root, registry.artifact_dir(name, version, root) / CARD_FILE
        )
        if path is None:
            raise HTTPException(404, f"no model card of {name} {version} in the artifacts")
        return FileResponse(path, media_type="text/html")

    @app.get("/reports/{day}", summary="The monitoring report of a day")
    def report(day: date) -> FileResponse:
        def stored(target: str) -> str | None:
            from ml_tasks import warehouse

            with warehouse.connect(target, autocommit=True) as conn:
                rows = _rows(
                    conn, "SELECT path FROM monitoring.reports WHERE dt = %(d)s", {"d": day}
                )
            return rows[0]["path"] if rows else None

        root = artifacts_root()
        path = inside(root, _lookup(stored)) or inside(
            root, Path("reports") / f"monitoring-{day.isoformat()}.html"
        )
        if path is None:
            raise HTTPException(404, f"no monitoring report of {day} in the artifacts")
        return FileResponse(path, media_type="text/html")

    @app.get("/datadocs/{path:path}", summary="Great Expectations Data Docs")
    def datadocs(path: str = "index.html") -> FileResponse:
        site = (artifacts_root() / DATA_DOCS_DIR).resolve()
        found = inside(site, path or "index.html")
        if found is None or found.suffix.lower() not in DATA_DOCS_SUFFIXES:
            raise HTTPException(404, "not in the Data Docs")
        return FileResponse(found)

    def _lookup(read: Callable[[str], Any]) -> Any:
        """``read(dsn)``; None when the warehouse has no Encore tables yet."""
        import psycopg

        from ml_tasks import warehouse

        try:
            return read(target())
        except psycopg.errors.UndefinedTable:
            return None
        except warehouse.WarehouseError as exc:
            raise Unavailable(str(exc)) from exc

    return app
