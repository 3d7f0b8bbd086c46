# The image the Kubernetes examples run: this repository installed with its dependencies.
#   docker build -f deploy/kubernetes/image.Dockerfile -t registry.example/tuning:latest .
FROM python:3.11-slim
WORKDIR /app
COPY . /app
RUN pip install --no-cache-dir -e . psycopg2-binary
ENTRYPOINT ["tuning"]
