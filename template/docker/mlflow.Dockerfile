# syntax=docker/dockerfile:1
# MLflow tracking server and model registry of the team stack (compose.yaml). Runs, model
# versions and aliases live in PostgreSQL (MLFLOW_BACKEND_STORE_URI); artifacts (the model
# bundles) in /mlartifacts, served through this server (--serve-artifacts), so the service and
# the jobs need only its URL: no shared disk, no cloud credentials.
# MLflow is pinned: upgrading a server with data in it (`mlflow db upgrade`) is a deliberate step.
FROM python:3.11-slim
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
RUN pip install "mlflow==3.17.*" "psycopg2-binary>=2.9,<3"
RUN groupadd --system --gid 10001 mlflow \
    && useradd --system --uid 10001 --gid mlflow --create-home --home-dir /home/mlflow mlflow \
    && install -d -o mlflow -g mlflow /mlartifacts
# Numeric: see ../Dockerfile.
USER 10001:10001
WORKDIR /home/mlflow
EXPOSE 5000
CMD ["mlflow", "server", "--host", "0.0.0.0", "--port", "5000", \
     "--artifacts-destination", "/mlartifacts", "--serve-artifacts"]
