# Encore image: Python 3.11, the pinned requirements, the project installed.
FROM python:3.11-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    AIRFLOW_HOME=/opt/airflow \
    AIRFLOW__CORE__DAGS_FOLDER=/opt/encore/dags \
    AIRFLOW__CORE__PLUGINS_FOLDER=/opt/encore/plugins \
    AIRFLOW__CORE__LOAD_EXAMPLES=False \
    ENCORE_HOME=/opt/encore
# curl: the api-server's and scheduler's healthchecks in docker-compose.yaml
RUN apt-get update && apt-get install -y --no-install-recommends libsndfile1 libpq5 curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 50000 airflow
WORKDIR /opt/encore
COPY requirements.txt pyproject.toml README.md ./
RUN pip install --no-cache-dir uv \
    && uv pip install --system --no-cache -r requirements.txt
COPY ml_tasks ./ml_tasks
COPY dags ./dags
COPY plugins ./plugins
COPY sql ./sql
COPY feature_repo ./feature_repo
RUN uv pip install --system --no-cache --no-deps -e . \
    && mkdir -p /opt/airflow/logs /data/landing /data/artifacts \
    && chown -R airflow /opt/airflow /data
USER airflow
