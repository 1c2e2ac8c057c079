#!/usr/bin/env bash
# Run an MLflow tracking server for fmolab.
#   mlflow/serve.sh                      # SQLite + artifacts folder under $FMOLAB_HOME (default ./fmolab-work)
#   HOST=10.0.0.5 PORT=5000 mlflow/serve.sh  # the private IP: reachable by Ray workers on other nodes, not the world
#   BACKEND=postgresql://user:pw@db/mlflow ARTIFACTS=s3://bucket/mlflow mlflow/serve.sh   # for teams
# Then point every part of the platform at it: export MLFLOW_TRACKING_URI=http://HOST:PORT
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
home=${FMOLAB_HOME:-$here/fmolab-work}
mkdir -p "$home/mlflow-server/artifacts"
HOST=${HOST:-127.0.0.1}            # loopback unless told otherwise
PORT=${PORT:-5000}
BACKEND=${BACKEND:-sqlite:///$home/mlflow-server/mlflow.db}
ARTIFACTS=${ARTIFACTS:-$home/mlflow-server/artifacts}
MLFLOW=${MLFLOW:-$here/.venv/bin/mlflow}
# MLflow 3's job runner (GenAI jobs, none of fmolab's) starts five or more worker processes: off.
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION=${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false}
[ -x "$MLFLOW" ] || MLFLOW=mlflow
echo "MLflow server on http://$HOST:$PORT (store $BACKEND, artifacts $ARTIFACTS)"
exec "$MLFLOW" server --host "$HOST" --port "$PORT" --backend-store-uri "$BACKEND" \
  --artifacts-destination "$ARTIFACTS" --serve-artifacts --workers "${WORKERS:-1}" "$@"
