# syntax=docker/dockerfile:1.7
# MLflow tracking server for the cluster: the upstream image ships neither the PostgreSQL driver
# nor boto3, which the chart's backend store (postgresql+psycopg2://) and S3 artifacts need.
FROM python:3.12.12-slim-bookworm
ARG MLFLOW_VERSION=3.17.2
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# mlflow[auth]: the basic-auth app (--app-name basic-auth) needs Flask-WTF for CSRF checks.
RUN pip install --no-cache-dir "mlflow[auth]==${MLFLOW_VERSION}" "psycopg2-binary==2.9.13" "boto3==1.44.8" \
 && groupadd --gid 1000 mlflow && useradd --uid 1000 --gid 1000 --create-home mlflow
ENV HOME=/tmp PYTHONUNBUFFERED=1 MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false
USER 1000:1000
EXPOSE 5000
ENTRYPOINT ["mlflow"]
CMD ["server", "--host=0.0.0.0", "--port=5000"]
