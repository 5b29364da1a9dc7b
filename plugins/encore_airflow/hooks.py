"""The warehouse as Airflow sees it: the ``warehouse`` connection, or Encore's settings."""

from __future__ import annotations

import logging

from airflow.sdk import BaseHook
from airflow.sdk.exceptions import AirflowNotFoundException

log = logging.getLogger(__name__)

WAREHOUSE_CONN_ID = "warehouse"


class WarehouseHook(BaseHook):
    """Resolves the warehouse DSN for tasks.

    The Airflow connection ``warehouse`` (``AIRFLOW_CONN_WAREHOUSE``) wins; without it,
    ``ml_tasks`` settings decide (``WAREHOUSE_DSN``, else the embedded server).
    """

    conn_name_attr = "warehouse_conn_id"
    default_conn_name = WAREHOUSE_CONN_ID
    conn_type = "postgres"
    hook_name = "Encore warehouse"

    def __init__(self, warehouse_conn_id: str = WAREHOUSE_CONN_ID) -> None:
        super().__init__()
        self.warehouse_conn_id = warehouse_conn_id

    def get_dsn(self) -> str:
        from ml_tasks import warehouse

        try:
            conn = self.get_connection(self.warehouse_conn_id)
        except AirflowNotFoundException:
            log.info("no Airflow connection %r; using Encore settings", self.warehouse_conn_id)
            return warehouse.resolve_dsn()
        uri = conn.get_uri()
        for legacy in ("postgres://", "postgresql+psycopg2://", "postgresql+psycopg://"):
            if uri.startswith(legacy):
                uri = "postgresql://" + uri[len(legacy) :]
        return uri
