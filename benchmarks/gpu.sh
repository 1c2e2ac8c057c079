#!/usr/bin/env bash
# The GPU benchmarks in one go, within ~8 minutes on a bare GPU machine with no network: resnet50
# training samples/s (fp32, bf16, channels_last and both, with GroupNorm and BatchNorm), the official
# DeFMO's inference against kornia's, and Cycles GPU / EEVEE render seconds per sequence; one JSON,
# benchmarks/results/gpu.json (or $OUT).
# It uses the machine's own python3 and CUDA torch; packages it lacks (kornia, kornia_rs) travel as
# wheels in .whl/ (the device tool's README says how); a part whose packages are missing (bpy) is
# recorded as skipped, not failed.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-benchmarks/results}
mkdir -p "$out"
PY=${PYTHON:-python3}
if ls .whl/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="platform:.:${PYTHONPATH:-}" FMOLAB_HOME=${FMOLAB_HOME:-/tmp/fmolab-gpu}
nvidia-smi -L || true
timeout 240 $PY benchmarks/gpu_train.py --out "$out/gpu_train.json" || echo "gpu_train: failed or timed out"
timeout 150 $PY benchmarks/inference.py --gpu --out "$out/gpu_inference.json" || echo "inference: failed or timed out"
if $PY -c "import bpy" 2>/dev/null; then
  timeout 150 $PY - "$out/gpu_render.json" <<'PY' || echo "render: failed or timed out"
import json, sys
sys.path.insert(0, "benchmarks")
from render import run_config
tiny = ["render.width=320", "render.height=240", "render.num_frames=24"]
res = {name: run_config(tiny + extra, 4) for name, extra in
       (("cycles_gpu", ["render.device=gpu"]), ("eevee", ["render.engine=eevee", "render.device=gpu"]))}
open(sys.argv[1], "w").write(json.dumps(res, indent=2, default=str))
PY
else
  echo '{"skipped": "bpy is not installed on this machine"}' > "$out/gpu_render.json"
fi
$PY - "$out" <<'PY'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
parts = {p: out / f"gpu_{p}.json" for p in ("train", "inference", "render")}
merged = {p: json.loads(f.read_text()) if f.exists() else {"error": "no result"} for p, f in parts.items()}
(out / "gpu.json").write_text(json.dumps(merged, indent=2))
print(json.dumps(merged, indent=2))
PY
