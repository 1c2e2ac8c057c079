#!/usr/bin/env bash
# Sets up the project environment in $VENV (default .venv), in one resolve, without touching torch
# once it is there:
#  - a torch importable from the system Python is kept (the venv sees system site-packages);
#  - otherwise a GPU machine gets the registry's torch, a CPU machine torch==2.13.0 (the CPU build,
#    never the multi-GB CUDA build);
#  - the installed torch is then pinned by a constraint so no dependency can upgrade it.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY=${PYTHON:-python3}
CPU_TORCH=${FMOLAB_CPU_TORCH:-torch==2.13.0}

if [ ! -x "$VENV/bin/python" ]; then
  if "$PY" -c "import torch" 2>/dev/null; then
    echo "setup: keeping the system's torch ($("$PY" -c 'import torch; print(torch.__version__)'))"
    "$PY" -m venv --system-site-packages "$VENV"
  else
    "$PY" -m venv "$VENV"
  fi
fi
pip=("$VENV/bin/python" -m pip --disable-pip-version-check)
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    echo "setup: GPU found, installing torch"
    "${pip[@]}" install torch
  else
    echo "setup: no GPU, installing the CPU build ($CPU_TORCH)"
    "${pip[@]}" install "$CPU_TORCH"
  fi
fi
torch_version=$("$VENV/bin/python" -c "import importlib.metadata as m; print(m.version('torch'))")
echo "torch==$torch_version" > "$VENV/torch-constraint.txt"
"${pip[@]}" install -c constraints.txt -c "$VENV/torch-constraint.txt" -e ".[render,dev]"
touch "$VENV/.installed"
echo "setup: done ($VENV, torch $torch_version)"
