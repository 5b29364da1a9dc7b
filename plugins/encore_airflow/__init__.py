"""Encore's Airflow-facing side: shared DAG defaults, the warehouse hook, sensors.

Lives in the Airflow plugins folder (on ``sys.path`` for DAGs); imports ``ml_tasks``,
never the reverse.
"""
