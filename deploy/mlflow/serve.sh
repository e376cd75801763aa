#!/bin/sh
# MLflow's tracking server as the deployment runs it: runs and the registry in PostgreSQL, artifacts
# proxied by the server (clients need no storage credentials), basic auth on every request.
#
# Compose runs it as the mlflow service; the native rehearsal (scalping_assets.testing.rehearsal) runs
# the same script. Everything comes from the environment (.env.example names each variable):
#   MLFLOW_BACKEND_STORE_URI       postgresql+psycopg2://user:password@host:5432/mlflow
#   MLFLOW_ARTIFACTS_DESTINATION   where proxied artifacts are stored (a folder, s3://..., ...)
#   MLFLOW_AUTH_DATABASE_URI       the users and permissions store (a PostgreSQL database of its own)
#   MLFLOW_AUTH_ADMIN_USERNAME     the admin MLflow creates on first start ...
#   MLFLOW_AUTH_ADMIN_PASSWORD     ... with this password (MLflow ships none; it refuses to start without)
#   MLFLOW_FLASK_SERVER_SECRET_KEY signs the auth app's sessions and CSRF tokens
#   MLFLOW_HOST, MLFLOW_PORT       where it listens (default 0.0.0.0:5000)
#   MLFLOW_WORKERS                 server processes (default 4)
set -eu

for name in MLFLOW_BACKEND_STORE_URI MLFLOW_ARTIFACTS_DESTINATION MLFLOW_AUTH_DATABASE_URI \
  MLFLOW_AUTH_ADMIN_USERNAME MLFLOW_AUTH_ADMIN_PASSWORD MLFLOW_FLASK_SERVER_SECRET_KEY; do
  eval "value=\${$name:-}"
  if [ -z "$value" ]; then
    echo "deploy/mlflow/serve.sh: $name is not set (see deploy/.env.example)" >&2
    exit 2
  fi
done

# The auth app reads its store from an ini file, not from the environment: write one that only this
# user can read (it names the store's URL, which may hold a password). configparser treats % as an
# interpolation sign, so a percent-encoded URL is written with %% .
umask 077
config_dir=$(mktemp -d)
cat >"$config_dir/basic_auth.ini" <<INI
[mlflow]
default_permission = ${MLFLOW_AUTH_DEFAULT_PERMISSION:-NO_PERMISSIONS}
database_uri = $(printf '%s' "$MLFLOW_AUTH_DATABASE_URI" | sed 's/%/%%/g')
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
INI
export MLFLOW_AUTH_CONFIG_PATH="$config_dir/basic_auth.ini"
# The server's GenAI job runner is not used by this project; it would start a worker pool per process.
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false

exec mlflow server --app-name basic-auth \
  --backend-store-uri "$MLFLOW_BACKEND_STORE_URI" \
  --artifacts-destination "$MLFLOW_ARTIFACTS_DESTINATION" --serve-artifacts \
  --host "${MLFLOW_HOST:-0.0.0.0}" --port "${MLFLOW_PORT:-5000}" --workers "${MLFLOW_WORKERS:-4}"
