#!/usr/bin/env bash
# Run an MLflow tracking server for fmolab.
#   mlflow/serve.sh                      # SQLite + artifacts folder under $FMOLAB_HOME (default ./fmolab-work)
#   HOST=10.0.0.5 PORT=5000 mlflow/serve.sh  # the private IP: reachable by Ray workers on other nodes, not the world
#   BACKEND=postgresql://user:pw@db/mlflow ARTIFACTS=s3://bucket/mlflow mlflow/serve.sh   # for teams
#   AUTH=basic MLFLOW_AUTH_ADMIN_PASSWORD=<from a secret> mlflow/serve.sh   # users and passwords
# Then point every part of the platform at it: export MLFLOW_TRACKING_URI=http://HOST:PORT
# (with AUTH=basic also MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD; see mlflow/README.md).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
home=${FMOLAB_HOME:-$here/fmolab-work}
mkdir -p "$home/mlflow-server/artifacts"
HOST=${HOST:-127.0.0.1}            # loopback unless told otherwise
PORT=${PORT:-5000}
BACKEND=${BACKEND:-sqlite:///$home/mlflow-server/mlflow.db}
ARTIFACTS=${ARTIFACTS:-$home/mlflow-server/artifacts}
MLFLOW=${MLFLOW:-$here/.venv/bin/mlflow}
AUTH=${AUTH:-none}
# MLflow 3's job runner (GenAI jobs, none of fmolab's) starts five or more worker processes: off.
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION=${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false}
[ -x "$MLFLOW" ] || MLFLOW=mlflow
app=()
case "$AUTH" in
  none) ;;
  basic)
    # MLflow's basic-auth app. The admin's password comes from the environment (a secret injected by
    # the cluster), never from a file: MLflow reads MLFLOW_AUTH_ADMIN_PASSWORD on the first start and
    # keeps only a hash in the users store. The file written here holds no secret.
    if [ -z "${MLFLOW_AUTH_ADMIN_PASSWORD:-}" ] && [ ! -s "$home/mlflow-server/auth.db" ]; then
      echo "serve.sh: AUTH=basic needs MLFLOW_AUTH_ADMIN_PASSWORD (from a secret) for the first start" >&2
      exit 2
    fi
    export MLFLOW_AUTH_ADMIN_USERNAME=${MLFLOW_AUTH_ADMIN_USERNAME:-admin}
    # The UI's CSRF key: from a secret when several servers share one store, else fresh per start
    # (shared by this server's workers; a restart only invalidates open UI forms).
    export MLFLOW_FLASK_SERVER_SECRET_KEY=${MLFLOW_FLASK_SERVER_SECRET_KEY:-$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')}
    conf="$home/mlflow-server/basic_auth.ini"
    cat > "$conf" <<INI
[mlflow]
# written by mlflow/serve.sh; no password here (MLFLOW_AUTH_ADMIN_PASSWORD)
default_permission = ${AUTH_DEFAULT_PERMISSION:-READ}
database_uri = ${AUTH_BACKEND:-sqlite:///$home/mlflow-server/auth.db}
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
INI
    export MLFLOW_AUTH_CONFIG_PATH=$conf
    app=(--app-name basic-auth) ;;
  *) echo "serve.sh: AUTH must be none or basic, not '$AUTH'" >&2; exit 2 ;;
esac
echo "MLflow server on http://$HOST:$PORT (store $BACKEND, artifacts $ARTIFACTS, auth $AUTH)"
# The UI opens an experiment in the view last chosen in that browser (GenAI for a new one); fmolab's
# commands print addresses that ask for model training, and a click on "Model training" is remembered.
echo "open http://$HOST:$PORT/#/experiments?workflowType=machine_learning (then keep \"Model training\" selected, top left)"
exec "$MLFLOW" server --host "$HOST" --port "$PORT" --backend-store-uri "$BACKEND" \
  --artifacts-destination "$ARTIFACTS" --serve-artifacts --workers "${WORKERS:-1}" "${app[@]}" "$@"
