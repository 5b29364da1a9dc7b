"""Airflow's ``[core] hostname_callable`` for tests that run several workers on one machine.

Airflow records the host a task ran on (``task_instance.hostname``) from this callable. Two
Celery workers on one test machine share its hostname, so tests/test_celery.py names each
worker in ``ENCORE_TEST_WORKER_NAME`` to tell which one ran a task.
"""

from __future__ import annotations

import os
import socket


def hostname() -> str:
    """The worker's test name, else the machine's fully qualified domain name."""
    return os.environ.get("ENCORE_TEST_WORKER_NAME") or socket.getfqdn()
