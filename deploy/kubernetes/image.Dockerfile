# The image the Kubernetes examples run: this repository installed with its dependencies and its
# `postgres` extra, the PostgreSQL driver SQLAlchemy uses for `postgresql://` URLs (psycopg 3;
# psycopg2 is not it: a worker would exit 2 with "No module named 'psycopg'").
#   docker build -f deploy/kubernetes/image.Dockerfile -t registry.example/tuning:latest .
# tests/test_deploy.py checks that this install line yields SQLAlchemy's driver.
FROM python:3.11-slim
WORKDIR /app
COPY . /app
RUN pip install --no-cache-dir -e '.[postgres]'
ENTRYPOINT ["tuning"]
