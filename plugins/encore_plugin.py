"""The Encore plugin: the Encore page (model registry, latest runs, reports) and the
nightly chain's deadline reference.

Airflow 3's UI is React served by the FastAPI api-server, so the page is a FastAPI app the
api-server mounts under ``/encore`` (``fastapi_apps``) plus a nav entry that shows it in an
iframe inside the UI (``external_views``, destination ``nav``). See docs/operations.md.

The scheduler creates the deadlines of ``nightly_deadline`` through
:class:`encore_airflow.deadlines.RunDayEnd`, which it finds here (``deadline_references``).
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from encore_airflow.deadlines import RunDayEnd
from encore_airflow.ui import create_app

#: Where the api-server mounts the Encore app (must not clash with /api/v2, /ui, /auth, ...).
URL_PREFIX = "/encore"
#: The UI route of the nav entry: the page opens at ``<base_url>/plugin/encore``.
URL_ROUTE = "encore"


class EncorePlugin(AirflowPlugin):
    """The Encore page in the Airflow UI, and the deadline reference of the nightly chain."""

    name = "encore"
    deadline_references = [RunDayEnd]  # noqa: RUF012
    fastapi_apps = [  # noqa: RUF012 (Airflow's plugin interface is class attributes)
        {"app": create_app(), "url_prefix": URL_PREFIX, "name": "Encore"},
    ]
    external_views = [  # noqa: RUF012
        {
            "name": "Encore",
            # Relative to the UI's <base href> (Airflow's base_url), so it also works when
            # Airflow is served under a sub-path.
            "href": URL_PREFIX.lstrip("/") + "/",
            "destination": "nav",
            "url_route": URL_ROUTE,
        },
    ]
