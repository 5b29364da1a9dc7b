"""Encore's domain library: warehouse, contract, simulator, ingestion, validation, models.

Pure Python; nothing in this package imports Airflow (the DAGs import it, never the reverse).
"""

__version__ = "0.1.0"
