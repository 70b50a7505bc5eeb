#!/bin/sh
# Start the MLflow tracking server with authentication on, configured from the environment only.
#
# The container of docker-compose.yaml runs this, and so can a systemd unit or a shell on a VM.
# Required:
#   MLFLOW_BACKEND_STORE_URI        runs, params, metrics: postgresql://user:pw@host:5432/mlflow
#   MLFLOW_ARTIFACTS_DESTINATION    checkpoints and files: s3://bucket/mlflow (or a local folder)
#   MLFLOW_AUTH_DATABASE_URI        users and permissions: postgresql://user:pw@host:5432/mlflow_auth
#   MLFLOW_AUTH_ADMIN_PASSWORD      the admin's password, used when the admin is first created
#   MLFLOW_FLASK_SERVER_SECRET_KEY  signs the UI's CSRF tokens: a long random string
# Optional: MLFLOW_HOST (0.0.0.0), MLFLOW_PORT (5000), MLFLOW_WORKERS (1, see below),
#   MLFLOW_AUTH_ADMIN_USERNAME (admin), MLFLOW_AUTH_DEFAULT_PERMISSION (READ),
#   MLFLOW_ALLOWED_HOSTS (host names clients use, e.g. mlflow.example.internal,mlflow:5000),
#   AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / MLFLOW_S3_ENDPOINT_URL for an S3-compatible store.
#
# Clients upload artifacts through this server (--serve-artifacts), so only the server holds the
# bucket's keys; sweeps need just MLFLOW_TRACKING_URI, _USERNAME and _PASSWORD.
set -eu

need() {
    eval "value=\${$1:-}"
    if [ -z "$value" ]; then
        echo "start-server.sh: $1 is not set: $2" >&2
        exit 2
    fi
}
need MLFLOW_BACKEND_STORE_URI "where runs are stored, e.g. postgresql://mlflow:PW@postgres:5432/mlflow"
need MLFLOW_ARTIFACTS_DESTINATION "where artifacts are stored, e.g. s3://mlflow-artifacts/mlflow"
need MLFLOW_AUTH_DATABASE_URI "the users database, e.g. postgresql://mlflow:PW@postgres:5432/mlflow_auth"
need MLFLOW_AUTH_ADMIN_PASSWORD "the password of the admin user (created on first start)"
need MLFLOW_FLASK_SERVER_SECRET_KEY "a long random string, e.g. from: openssl rand -hex 32"

# The auth app reads its settings from an ini file; write it from the environment into a
# private temporary file so that no database password sits in the repository or the image.
umask 077
config_dir=$(mktemp -d)
trap 'rm -rf "$config_dir"' EXIT
cat > "$config_dir/basic_auth.ini" <<INI
[mlflow]
default_permission = ${MLFLOW_AUTH_DEFAULT_PERMISSION:-READ}
database_uri = ${MLFLOW_AUTH_DATABASE_URI}
admin_username = ${MLFLOW_AUTH_ADMIN_USERNAME:-admin}
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
INI
export MLFLOW_AUTH_CONFIG_PATH="$config_dir/basic_auth.ini"

# MLFLOW_BACKEND_STORE_URI and MLFLOW_ARTIFACTS_DESTINATION stay in the environment, where
# `mlflow server` reads them itself: as arguments the database password would be on the command
# line, which `ps` shows to every user of the machine (tests/test_infra.py checks the argv).
export MLFLOW_BACKEND_STORE_URI MLFLOW_ARTIFACTS_DESTINATION
# MLflow 3's job runner (about ten worker processes of ~240 MB each) runs GenAI jobs that
# raysweep never submits; it stays off unless the environment turns it on.
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION="${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false}"
# MLflow 3's usage reports to its makers' collector (server and UI) stay off unless turned on.
export MLFLOW_DISABLE_TELEMETRY="${MLFLOW_DISABLE_TELEMETRY:-true}"
# One uvicorn worker, not `mlflow server`'s 4: with more than one, every request on a kept-alive
# connection waits about 40 ms (the response leaves in two TCP segments and the second is held
# until the client's delayed ACK), and a sweep's tracking is thousands of small requests.
# Measured on one machine: 44 ms per request with 4 workers, 1.7 ms with 1. (Gunicorn's workers
# do not wait either, but MLflow refuses --allowed-hosts under gunicorn.)
set -- mlflow server --app-name basic-auth --serve-artifacts \
    --host "${MLFLOW_HOST:-0.0.0.0}" --port "${MLFLOW_PORT:-5000}" \
    --workers "${MLFLOW_WORKERS:-1}"
if [ -n "${MLFLOW_ALLOWED_HOSTS:-}" ]; then
    set -- "$@" --allowed-hosts "$MLFLOW_ALLOWED_HOSTS"
fi
# Not exec: the trap must remove the ini file when the server stops. Signals are forwarded.
"$@" &
server=$!
trap 'kill -TERM "$server" 2>/dev/null; wait "$server"; rm -rf "$config_dir"; exit 143' TERM INT
wait "$server"
