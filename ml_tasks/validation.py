"""Great Expectations validation of one landing day in the raw warehouse tables.

The suites are generated from the landing contract (:mod:`ml_tasks.contract`): every column
rule, cross-column rule, key and reference flag becomes an expectation, so changing the
contract changes the checks. Each suite validates one day only, through a query asset whose
SQL keeps the day's range predicate in the database (a whole-table batch would scan every
day, every night).

GX runs in a file-backed project under ``$ENCORE_ARTIFACTS/gx``: suites, validation results
and Data Docs accumulate there across runs. Several processes may validate different days at
once, so everything that touches the project directory happens under an exclusive file lock.
The warehouse URL is handed to GX at run time (``${ENCORE_GX_WAREHOUSE_URL}`` in the project
config), so no credentials are written to disk.

Every validation writes one row per suite to ``monitoring.validation_results``; a failing day
raises :class:`ValidationFailed` with a readable summary.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import re
import time as timer
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

from ml_tasks import contract, warehouse
from ml_tasks.contract import Column, Dataset
from ml_tasks.settings import get_settings

if TYPE_CHECKING:  # great_expectations takes seconds to import: only when validating
    import great_expectations as gx
    from great_expectations.core.expectation_validation_result import (
        ExpectationSuiteValidationResult,
        ExpectationValidationResult,
    )
    from great_expectations.data_context import FileDataContext
    from great_expectations.expectations import Expectation

log = logging.getLogger(__name__)

#: Name of the GX data source for the warehouse, and the runtime variable holding its URL.
DATASOURCE_NAME = "encore_warehouse"
URL_VARIABLE = "ENCORE_GX_WAREHOUSE_URL"
#: Name of the (whole-asset) batch definition of each day's query asset.
BATCH_DEFINITION_NAME = "day"
#: Datasets that must deliver at least one row every day.
REQUIRED_ROWS_PER_DAY = {contract.LISTENING_EVENTS.name: 1}
#: Flag column set by ingestion for each referenced dataset (events keep unknown keys, flagged).
REFERENCE_FLAGS = {"users": "unknown_user", "tracks": "unknown_track"}
#: preview_path rules, as ingestion applies them.
#: Validation results listed on the Data Docs index page (pages of older ones stay on disk).
DOCS_INDEX_LIMIT = 400
#: Unexpected values kept per failed expectation (results and messages stay short).
EXAMPLES_PER_FAILURE = 5
#: The suite runs with counts and no examples: GX fetches each expectation's examples with
#: a ``LIMIT n`` query of its own, and where nothing is unexpected that query reads the whole
#: batch to find nothing (a full scan per expectation). :func:`run_definition` fetches the
#: examples afterwards, only for the expectations that counted unexpected values.
RESULT_FORMAT = {"result_format": "BASIC", "partial_unexpected_count": 0}
EXAMPLES_FORMAT = {"result_format": "BASIC", "partial_unexpected_count": EXAMPLES_PER_FAILURE}
#: The example fields of a map expectation's result, copied from the second pass.
EXAMPLE_FIELDS = ("partial_unexpected_list", "partial_unexpected_counts")


# --------------------------------------------------------------------------- results


@dataclass
class ValidationReport:
    """The outcome of one suite (one raw table) on one day."""

    suite: str
    dt: date
    success: bool
    evaluated: int
    failed: int
    failures: list[dict] = field(default_factory=list)
    data_docs_path: str | None = None

    def lines(self) -> list[str]:
        """Readable lines: the verdict, then one line per failed expectation."""
        if self.success:
            return [f"{self.suite}: passed ({self.evaluated} expectations)"]
        head = f"{self.suite}: FAILED {self.failed} of {self.evaluated} expectations"
        out = [head]
        for f in self.failures:
            where = f" on {f['column']}" if f.get("column") else ""
            out.append(f"  - {f['expectation']}{where}: {f['details']}")
        if self.data_docs_path:
            out.append(f"  Data Docs: {self.data_docs_path}")
        return out


@dataclass
class DayValidation:
    """The outcome of validating one day: one report per suite."""

    dt: date
    run_id: str
    reports: list[ValidationReport]

    @property
    def success(self) -> bool:
        return all(r.success for r in self.reports)

    @property
    def failed_suites(self) -> list[str]:
        return [r.suite for r in self.reports if not r.success]

    def summary(self) -> str:
        """Which suites failed, and which expectation on which column, observed vs allowed."""
        if self.success:
            head = (
                f"Validation of {self.dt} (run {self.run_id}) passed: {len(self.reports)} suites."
            )
        else:
            head = (
                f"Validation of {self.dt} (run {self.run_id}) FAILED: "
                f"{len(self.failed_suites)} of {len(self.reports)} suites failed "
                f"({', '.join(self.failed_suites)})."
            )
        lines = [head]
        for report in self.reports:
            lines.extend(report.lines())
        return "\n".join(lines)


class ValidationFailed(RuntimeError):
    """A day did not pass validation; ``validation`` holds every report."""

    def __init__(self, validation: DayValidation):
        super().__init__(validation.summary())
        self.validation = validation


# --------------------------------------------------------------------------- suites


def suite_name(dataset: Dataset) -> str:
    """The suite of a dataset is named after the raw table it validates."""
    return dataset.raw_table


def batch_columns(dataset: Dataset) -> list[str]:
    """The columns a suite reads: the contract's, plus the unknown-reference flags."""
    flags = [REFERENCE_FLAGS[ref] for _column, ref in dataset.references]
    return [*dataset.column_names, *flags]


def batch_query(dataset: Dataset, day: date) -> str:
    """SQL selecting the day's rows only, so the database prunes to one partition/day.

    Only the columns the suite reads are selected: GX learns a query asset's columns by
    running the query as it stands and reading the result's description, which transfers
    the day's rows once (psycopg cursors are client-side); narrow rows keep that cheap.
    """
    cols = ", ".join(batch_columns(dataset))
    if dataset.is_event:
        low, high = warehouse.day_bounds(day)
        col = dataset.time_column
        return (
            f"SELECT {cols} FROM {dataset.raw_table}"
            f" WHERE {col} >= '{low}'::timestamptz AND {col} < '{high}'::timestamptz"
        )
    return f"SELECT {cols} FROM {dataset.raw_table} WHERE dt = DATE '{day.isoformat()}'"


def _meta(rule: str, allowed: str, violation: str | None = None) -> dict[str, str]:
    meta = {"rule": rule, "allowed": allowed}
    if violation:
        meta["violation"] = violation
    return meta


def _fmt_number(value: float) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _column_expectations(col: Column, day: date, now: datetime) -> list[Expectation]:
    """The expectations of one contract column (mostly = 1: ingestion already quarantined)."""
    import great_expectations as gx

    E = gx.expectations
    msgs = contract.rule_messages(col)
    name = col.name
    out: list[Expectation] = []
    if not col.nullable:
        out.append(
            E.ExpectColumnValuesToNotBeNull(
                column=name, meta=_meta("missing", "no missing values", msgs["missing"])
            )
        )
    if col.non_empty:
        # ingestion treats a whitespace-only string as empty
        out.append(
            E.ExpectColumnValuesToMatchRegex(
                column=name, regex=r"\S", meta=_meta("empty", "a non-blank string", msgs["empty"])
            )
        )
    if col.minimum is not None or col.maximum is not None:
        parts = []
        if col.minimum is not None:
            parts.append(f"{'>' if col.minimum_exclusive else '>='} {_fmt_number(col.minimum)}")
        if col.maximum is not None:
            parts.append(f"<= {_fmt_number(col.maximum)}")
        violation = f"{name}: must be {' and '.join(parts)}"
        out.append(
            E.ExpectColumnValuesToBeBetween(
                column=name,
                min_value=col.minimum,
                max_value=col.maximum,
                strict_min=col.minimum_exclusive,
                meta=_meta(
                    "min" if col.minimum is not None else "max", " and ".join(parts), violation
                ),
            )
        )
    if col.allowed is not None:
        out.append(
            E.ExpectColumnValuesToBeInSet(
                column=name,
                value_set=list(col.allowed),
                meta=_meta("allowed", "one of " + ", ".join(col.allowed), msgs["allowed"]),
            )
        )
    if col.pattern is not None:
        out.append(
            E.ExpectColumnValuesToMatchRegex(
                column=name,
                regex=col.pattern,
                meta=_meta("pattern", f"matches {col.pattern}", msgs["pattern"]),
            )
        )
    if col.in_day:
        low, high = warehouse.day_bounds(day)
        high_value, strict_max, allowed = high, True, f"in [{low}, {high})"
        if col.not_future and now < datetime.combine(day + timedelta(days=1), time(), UTC):
            # the day is today: "not in the future" is the tighter bound
            high_value, strict_max = now.isoformat(), False
            allowed = f"in [{low}, now={now:%Y-%m-%d %H:%M:%S}+00]"
        out.append(
            E.ExpectColumnValuesToBeBetween(
                column=name,
                min_value=low,
                max_value=high_value,
                strict_max=strict_max,
                meta=_meta("in_day", allowed, msgs["in_day"]),
            )
        )
    elif col.not_future:
        out.append(
            E.ExpectColumnValuesToBeBetween(
                column=name,
                max_value=now.isoformat(),
                meta=_meta("future", "not in the future", msgs["future"]),
            )
        )
    if col.not_after_day:
        out.append(
            E.ExpectColumnValuesToBeBetween(
                column=name,
                max_value=day.isoformat(),
                meta=_meta("after_day", f"on or before {day}", msgs["after_day"]),
            )
        )
    if col.birth_year:
        top = day.year - contract.MIN_USER_AGE_YEARS
        out.append(
            E.ExpectColumnValuesToBeBetween(
                column=name,
                min_value=contract.MIN_BIRTH_YEAR,
                max_value=top,
                meta=_meta(
                    "birth_year", f"{contract.MIN_BIRTH_YEAR}..{top} or null", msgs["birth_year"]
                ),
            )
        )
    if col.relative_path:
        out.append(
            E.ExpectColumnValuesToMatchRegex(
                column=name,
                regex=contract.AUDIO_PATH_PATTERN,
                meta=_meta("path", "a relative path under audio/", msgs["path"]),
            )
        )
        out.append(
            E.ExpectColumnValuesToNotMatchRegex(
                column=name,
                regex=contract.PARENT_DIR_PATTERN,
                meta=_meta("path", "no '..' segment", msgs["path"]),
            )
        )
    return out


def _escape_braces(sql_text: str) -> str:
    """GX formats unexpected-row queries with ``str.format``: keep literal braces literal."""
    return sql_text.replace("{", "{{").replace("}", "}}")


def quarantine_share_query(dataset: Dataset, day: date, tolerance: float) -> str:
    """A row when the day's quarantined share of this dataset exceeds ``tolerance``.

    The share comes from ``raw.ingest_log``; the batch is counted alongside (GX wants every
    unexpected-rows query to read its batch, and the count helps whoever reads the result).
    """
    return (
        "SELECT sum(rows_quarantined) AS rows_quarantined, sum(rows_read) AS rows_read,"
        " (SELECT count(*) FROM {batch}) AS rows_in_batch"
        " FROM raw.ingest_log"
        f" WHERE dt = DATE '{day.isoformat()}' AND dataset = '{dataset.name}'"
        f" HAVING sum(rows_quarantined) > {float(tolerance)!r} * sum(rows_read)"
    )


def build_suite(
    dataset: Dataset, day: date, tolerance: float, now: datetime | None = None
) -> gx.ExpectationSuite:
    """The expectation suite of ``dataset`` for ``day``, generated from the contract.

    Value rules get ``mostly=1`` (defence in depth behind ingestion's quarantine); the
    unknown-reference flags may be true in at most ``tolerance`` of the rows; the share of the
    day's rows that ingestion quarantined must not exceed ``tolerance``.
    """
    import great_expectations as gx

    if not 0.0 <= tolerance <= 1.0:
        raise ValueError(f"tolerance must be between 0 and 1, got {tolerance}")
    E = gx.expectations
    now = now or datetime.now(UTC)
    expectations: list[Expectation] = []
    for col in dataset.columns:
        expectations.extend(_column_expectations(col, day, now))

    key_scope = "the day" if dataset.is_event else f"the delivery of {day}"
    expectations.append(
        E.ExpectColumnValuesToBeUnique(
            column=dataset.key,
            meta=_meta(
                "key", f"unique within {key_scope}", f"{dataset.key}: repeated within {key_scope}"
            ),
        )
    )

    for rule in dataset.cross_rules:
        cols = ", ".join(dict.fromkeys((dataset.key, *rule.columns)))
        expectations.append(
            E.UnexpectedRowsExpectation(
                unexpected_rows_query=(
                    f"SELECT {cols} FROM {{batch}} WHERE {_escape_braces(rule.sql_violation)}"
                ),
                description=rule.message,
                meta=_meta(rule.code, f"no row where {rule.sql_violation}", rule.message),
            )
        )

    for column, ref in dataset.references:
        flag = REFERENCE_FLAGS[ref]
        expectations.append(
            E.ExpectColumnValuesToBeInSet(
                column=flag,
                value_set=[False],
                mostly=round(1.0 - tolerance, 10),
                meta=_meta(
                    "unknown_reference",
                    f"true in at most {tolerance:.1%} of rows",
                    f"{flag}: {column} not delivered in {ref}",
                ),
            )
        )

    minimum_rows = REQUIRED_ROWS_PER_DAY.get(dataset.name)
    if minimum_rows:
        expectations.append(
            E.ExpectTableRowCountToBeBetween(
                min_value=minimum_rows,
                meta=_meta(
                    "row_count", f"at least {minimum_rows} row(s) on the day", "no rows for the day"
                ),
            )
        )

    expectations.append(
        E.UnexpectedRowsExpectation(
            unexpected_rows_query=quarantine_share_query(dataset, day, tolerance),
            description=f"share of {dataset.name} rows quarantined on the day <= {tolerance:.1%}",
            meta=_meta(
                "quarantine_share",
                f"at most {tolerance:.1%} of the rows read quarantined",
                "too many rows quarantined",
            ),
        )
    )

    return gx.ExpectationSuite(
        name=suite_name(dataset),
        expectations=expectations,
        meta={
            "generated_by": __name__,
            "contract_version": contract.CONTRACT_VERSION,
            "dt": day.isoformat(),
            "tolerance": tolerance,
        },
    )


# --------------------------------------------------------------------------- GX project


@contextlib.contextmanager
def project_lock(artifacts: Path) -> Iterator[Path]:
    """Hold the exclusive lock on the GX project under ``artifacts``; yields the project dir."""
    artifacts.mkdir(parents=True, exist_ok=True)
    lock_path = artifacts / "gx.lock"
    started = timer.perf_counter()
    with open(lock_path, "a+") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        waited = timer.perf_counter() - started
        if waited > 0.5:
            log.info("waited %.1f s for the GX project lock %s", waited, lock_path)
        try:
            yield artifacts / "gx"
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def open_context(artifacts: Path, warehouse_url: str) -> FileDataContext:
    """The file-backed GX project under ``artifacts/gx`` (created on first use).

    Call it with :func:`project_lock` held. Progress bars and analytics are switched off in
    the project config; the warehouse URL is only ever a runtime variable.
    """
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(
        mode="file",
        project_root_dir=artifacts,
        runtime_environment={URL_VARIABLE: warehouse_url},
    )
    variables = context.variables
    changed = False
    bars = variables.progress_bars
    if bars is None or bars.get("globally", True) or bars.get("metric_calculations", True):
        variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
        changed = True
    if variables.analytics_enabled is not False:
        variables.analytics_enabled = False
        changed = True
    sites = variables.data_docs_sites or {}
    for site in sites.values():
        index_builder = site.setdefault("site_index_builder", {})
        if index_builder.get("validation_results_limit") != DOCS_INDEX_LIMIT:
            # the index page reads every result it lists: bound it so builds stay fast
            index_builder.setdefault("class_name", "DefaultSiteIndexBuilder")
            index_builder["validation_results_limit"] = DOCS_INDEX_LIMIT
            changed = True
    if changed:
        variables.data_docs_sites = sites
        variables.save()
        context = gx.get_context(
            mode="file",
            project_root_dir=artifacts,
            runtime_environment={URL_VARIABLE: warehouse_url},
        )
    return context


def warehouse_datasource(context: FileDataContext):
    template = "${" + URL_VARIABLE + "}"
    try:
        ds = context.data_sources.get(DATASOURCE_NAME)
    except KeyError:
        ds = None
    if (
        ds is None
        or ds.type != "postgres"
        or str(ds.connection_string) != template
        or ds.kwargs
        or ds.create_temp_table
    ):
        # PostgresDatasource validates a literal URL and rejects socket-only ones; a config
        # variable is substituted after validation, so the embedded server's URL works too.
        ds = context.data_sources.add_or_update_postgres(
            DATASOURCE_NAME, connection_string=template
        )
    return ds


def _validation_definition(
    context: FileDataContext,
    ds,
    dataset: Dataset,
    day: date,
    run_id: str,
    suite: gx.ExpectationSuite,
):
    metadata = {
        "dt": day.isoformat(),
        "run_id": run_id,
        "contract_version": contract.CONTRACT_VERSION,
    }
    if dataset.is_event:
        # The day's partition is the batch: GX reflects a table's columns from the catalog,
        # whereas a query asset is executed (the whole day fetched) just to learn them.
        partition = warehouse.partition_name(dataset.raw_table, day)
        return day_definition(context, ds, suite, metadata, partition=partition)
    return day_definition(context, ds, suite, metadata, query=batch_query(dataset, day))


def day_definition(
    context: FileDataContext,
    ds,
    suite: gx.ExpectationSuite,
    metadata: dict[str, Any],
    *,
    partition: str | None = None,
    query: str | None = None,
):
    """Store the validation definition of ``suite`` on one day's batch: the asset named
    after the suite, replaced, on table ``partition`` (``schema.table``) or else on
    ``query``. Raw and feature validation both define their batches here."""
    if (partition is None) == (query is None):
        raise ValueError("day_definition needs exactly one of partition and query")
    if suite.name in ds.get_asset_names():
        ds.delete_asset(suite.name)
    if partition is not None:
        schema, table = partition.split(".")
        asset = ds.add_table_asset(
            suite.name, table_name=table, schema_name=schema, batch_metadata=metadata
        )
    else:
        asset = ds.add_query_asset(suite.name, query=query, batch_metadata=metadata)
    batch_definition = asset.add_batch_definition_whole_table(BATCH_DEFINITION_NAME)
    return save_definition(context, batch_definition, suite)


def save_definition(context: FileDataContext, batch_definition, suite: gx.ExpectationSuite):
    """Store the validation definition of ``suite`` on ``batch_definition`` (named after it).

    The suite stored by an earlier run is deleted first. GX's ``add_or_update`` would keep the
    ids of unchanged expectations by looking each new one up in the stored suite, comparing
    whole expectations as dicts, and a new expectation (no id yet) never equals a stored one,
    so every lookup compares against all: quadratic in the suite's size (0.7 s of a feature
    day's validation). Nothing reads the ids; each run's suite is generated afresh anyway.
    """
    import great_expectations as gx
    from great_expectations.exceptions import DataContextError

    with contextlib.suppress(DataContextError):  # the first run has nothing stored
        context.suites.delete(suite.name)
    return context.validation_definitions.add_or_update(
        gx.ValidationDefinition(name=suite.name, data=batch_definition, suite=suite)
    )


def run_definition(
    context: FileDataContext, definition, gx_run
) -> tuple[ExpectationSuiteValidationResult, Any]:
    """Run ``definition``'s suite, then fetch examples where values were unexpected.

    The suite runs with :data:`RESULT_FORMAT` (counts, no examples). Each expectation whose
    result counted unexpected values is then run again alone with :data:`EXAMPLES_FORMAT`,
    and its examples are copied into the first result, which is stored again. Returns the
    result and its key in the validation results store (the key Data Docs are built for).
    """
    from great_expectations.data_context.types.resource_identifiers import (
        ExpectationSuiteIdentifier,
        ValidationResultIdentifier,
    )
    from great_expectations.validator.v1_validator import Validator

    result = definition.run(run_id=gx_run, result_format=RESULT_FORMAT)
    key = ValidationResultIdentifier(
        expectation_suite_identifier=ExpectationSuiteIdentifier(name=definition.suite.name),
        run_id=gx_run,
        batch_identifier=result.batch_id,
    )
    unexpected = [r for r in result.results if (r.result or {}).get("unexpected_count")]
    if unexpected:
        validator = Validator(
            batch_definition=definition.batch_definition, result_format=EXAMPLES_FORMAT
        )
        for first in unexpected:
            again = validator.validate_expectation(first.expectation_config.to_domain_obj())
            for name in EXAMPLE_FIELDS:
                if name in (again.result or {}):
                    first.result[name] = again.result[name]
        context.validation_results_store.set(key, result)
    return result, key


def build_docs(context: FileDataContext, keys: Sequence[Any]) -> list[str | None]:
    """Build Data Docs for validation results ``keys`` and their suites (each suite once);
    the page of each result, in the order of ``keys``."""
    suites = {k.expectation_suite_identifier.name: k.expectation_suite_identifier for k in keys}
    context.build_data_docs(resource_identifiers=[*keys, *suites.values()])
    return [docs_path(context, key) for key in keys]


def docs_path(context: FileDataContext, identifier) -> str | None:
    for site in context.get_docs_sites_urls(resource_identifier=identifier):
        url = site.get("site_url")
        if url and url.startswith("file://"):
            return unquote(urlparse(url).path)
    return None


def dispose_engines(ds) -> None:
    with contextlib.suppress(Exception):
        ds.get_execution_engine().engine.dispose()
    with contextlib.suppress(Exception):
        ds.get_engine().dispose()


# --------------------------------------------------------------------------- failures


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _exception_message(result: ExpectationValidationResult) -> str | None:
    info = result.exception_info or {}
    candidates = [info] + [v for v in info.values() if isinstance(v, dict)]
    for item in candidates:
        if item.get("raised_exception"):
            message = str(item.get("exception_message") or "unknown error").strip()
            return message.splitlines()[0][:300]
    return None


def _examples(values: Sequence[Any]) -> str:
    shown: list[str] = []
    for value in values:
        if isinstance(value, str):
            text = repr(value if len(value) <= 60 else value[:57] + "...")
        else:
            text = str(value)
        if text not in shown:
            shown.append(text)
    return ", ".join(shown[:EXAMPLES_PER_FAILURE])


def _rows(count: Any) -> str:
    return f"{count} row" if count == 1 else f"{count} rows"


def describe_failure(
    result: ExpectationValidationResult,
    ingest_totals: dict[str, tuple[int, int]] | None = None,
    dataset: str | None = None,
) -> dict:
    """A failed expectation as ``{expectation, column, rule, observed, allowed, details}``."""
    config = result.expectation_config
    kwargs = config.kwargs
    meta = config.meta or {}
    column = kwargs.get("column")
    allowed = meta.get("allowed", "")
    violation = meta.get("violation") or config.type
    res = result.result or {}
    error = _exception_message(result)
    observed: Any
    if error:
        observed = None
        details = f"could not be evaluated: {error}"
    elif "unexpected_count" in res:
        count, total = res.get("unexpected_count") or 0, res.get("element_count") or 0
        pct = res.get("unexpected_percent") or 0.0
        examples = res.get("partial_unexpected_list") or []
        observed = {
            "unexpected_count": count,
            "element_count": total,
            "unexpected_percent": round(pct, 4),
            "examples": _jsonable(examples[:5]),
        }
        details = f"{violation}: {count} of {_rows(total)} ({pct:.2f}%)"
        if examples:
            details += f", e.g. {_examples(examples)}"
        details += f"; allowed: {allowed}"
    elif meta.get("rule") == "quarantine_share":
        read, quarantined = (ingest_totals or {}).get(dataset or "", (0, 0))
        share = quarantined / read if read else 0.0
        observed = {"rows_quarantined": quarantined, "rows_read": read, "share": round(share, 6)}
        details = (
            f"{quarantined} of {read} rows read were quarantined ({share:.1%}); allowed: {allowed}"
        )
    elif config.type == "unexpected_rows_expectation":
        observed = res.get("observed_value")
        details = f"{violation}: {_rows(observed)}; allowed: {allowed}"
    else:
        observed = _jsonable(res.get("observed_value"))
        details = f"{violation}: observed {observed}; allowed: {allowed}"
    return {
        "expectation": config.type,
        "column": column,
        "rule": meta.get("rule"),
        "observed": observed,
        "allowed": allowed,
        "details": details,
    }


def suite_report(
    suite: str,
    day: date,
    result: ExpectationSuiteValidationResult,
    docs: str | None,
    ingest_totals: dict[str, tuple[int, int]] | None = None,
    dataset: str | None = None,
) -> ValidationReport:
    """The report of one suite's result (raw or feature validation); ``ingest_totals`` and
    ``dataset`` describe a raw table's quarantine share."""
    stats = result.statistics
    failures = [
        describe_failure(r, ingest_totals, dataset) for r in result.results if not r.success
    ]
    return ValidationReport(
        suite=suite,
        dt=day,
        success=bool(result.success),
        evaluated=int(stats.get("evaluated_expectations", len(result.results))),
        failed=int(stats.get("unsuccessful_expectations", len(failures))),
        failures=failures,
        data_docs_path=docs,
    )


# --------------------------------------------------------------------------- warehouse I/O


def _ingest_totals(dsn: str, day: date) -> dict[str, tuple[int, int]]:
    """rows_read and rows_quarantined per dataset for the day, from raw.ingest_log."""
    with warehouse.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT dataset, sum(rows_read)::bigint, sum(rows_quarantined)::bigint"
            " FROM raw.ingest_log WHERE dt = %s GROUP BY dataset",
            (day,),
        ).fetchall()
    return {name: (int(read), int(quarantined)) for name, read, quarantined in rows}


def record_results(dsn: str, validation: DayValidation) -> None:
    """Replace this run's rows for the day in monitoring.validation_results (one transaction)."""
    suites = [r.suite for r in validation.reports]
    with warehouse.connect(dsn) as conn, conn.transaction():
        conn.execute(
            "DELETE FROM monitoring.validation_results"
            " WHERE dt = %s AND run_id = %s AND suite = ANY(%s)",
            (validation.dt, validation.run_id, suites),
        )
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO monitoring.validation_results (suite, dt, run_id, success,"
                " evaluated, failed, failures, data_docs_path) VALUES"
                " (%s, %s, %s, %s, %s, %s, %s::jsonb, %s)",
                [
                    (
                        r.suite,
                        r.dt,
                        validation.run_id,
                        r.success,
                        r.evaluated,
                        r.failed,
                        json.dumps(r.failures, default=str),
                        r.data_docs_path,
                    )
                    for r in validation.reports
                ],
            )


# --------------------------------------------------------------------------- entry point


def safe_run_name(run_id: str) -> str:
    """A run id usable as a directory name in the GX stores and Data Docs."""
    return re.sub(r"[^A-Za-z0-9._+=-]+", "_", run_id).strip("_") or "run"


class DayNotIngested(RuntimeError):
    """Validation was asked for a day whose raw partitions do not exist."""


def _require_ingested(dsn: str, day: date, datasets: Sequence[Dataset]) -> None:
    with warehouse.connect(dsn) as conn:
        missing = [
            name
            for name in (warehouse.partition_name(d.raw_table, day) for d in datasets if d.is_event)
            if conn.execute("SELECT to_regclass(%s)", (name,)).fetchone()[0] is None
        ]
    if missing:
        raise DayNotIngested(
            f"cannot validate {day}: {', '.join(missing)} do(es) not exist; ingest the day"
            f" first (encore ingest --date {day})"
        )


def validate_day(
    day: date,
    *,
    run_id: str,
    dsn: str | None = None,
    artifacts: Path | None = None,
    tolerance: float | None = None,
    datasets: Sequence[Dataset] = contract.DATASETS,
    raise_on_failure: bool = True,
) -> DayValidation:
    """Validate ``day`` of every dataset's raw table, record the results, build Data Docs.

    Writes one row per suite to monitoring.validation_results (a re-run of the same
    ``run_id`` replaces them) and raises :class:`ValidationFailed` when a suite fails,
    unless ``raise_on_failure`` is false.
    """
    from great_expectations.core.run_identifier import RunIdentifier

    started = timer.perf_counter()
    settings = get_settings()
    tolerance = settings.quarantine_tolerance if tolerance is None else tolerance
    artifacts = Path(artifacts or settings.artifacts).resolve()
    target = warehouse.ensure_migrated(dsn)
    _require_ingested(target, day, datasets)
    ingest_totals = _ingest_totals(target, day)
    now = datetime.now(UTC)
    gx_run = RunIdentifier(run_name=f"{day.isoformat()}__{safe_run_name(run_id)}", run_time=now)

    outcomes: list[tuple[Dataset, ExpectationSuiteValidationResult, Any]]
    outcomes = []
    docs: dict[str, str | None] = {}
    with project_lock(artifacts):
        context = open_context(artifacts, warehouse.sqlalchemy_url(target))
        ds = warehouse_datasource(context)
        try:
            for dataset in datasets:
                t0 = timer.perf_counter()
                suite = build_suite(dataset, day, tolerance, now=now)
                definition = _validation_definition(context, ds, dataset, day, run_id, suite)
                result, key = run_definition(context, definition, gx_run)
                outcomes.append((dataset, result, key))
                log.info(
                    "validated %s for %s: %s, %d expectations in %.2f s",
                    suite.name,
                    day,
                    "passed" if result.success else "FAILED",
                    len(result.results),
                    timer.perf_counter() - t0,
                )
        finally:
            dispose_engines(ds)
        t0 = timer.perf_counter()
        pages = build_docs(context, [key for _, _, key in outcomes])
        for (dataset, _, _), page in zip(outcomes, pages, strict=True):
            docs[dataset.name] = page
        log.info("built Data Docs in %.2f s", timer.perf_counter() - t0)

    validation = DayValidation(
        dt=day,
        run_id=run_id,
        reports=[
            suite_report(
                suite_name(dataset),
                day,
                result,
                docs.get(dataset.name),
                ingest_totals,
                dataset.name,
            )
            for dataset, result, _ in outcomes
        ],
    )
    record_results(target, validation)
    log.info(
        "validation of %s (run %s) %s in %.2f s",
        day,
        run_id,
        "passed" if validation.success else "FAILED",
        timer.perf_counter() - started,
    )
    if not validation.success:
        log.warning("validation of %s FAILED: %s", day, ", ".join(validation.failed_suites))
        if raise_on_failure:
            raise ValidationFailed(validation)
    return validation
