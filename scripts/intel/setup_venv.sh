#!/usr/bin/env bash
# Create (idempotently) the separate venv that holds Intel's auto-round 0.16.1, used ONLY to
# generate reference data. Our packages never import `auto_round`.
#
#   scripts/intel/setup_venv.sh            # venv at ${AUTOROUND_INTEL_VENV:-$HOME/.cache/autoround-dev/intel-venv}
#   AUTOROUND_INTEL_VENV=/some/dir scripts/intel/setup_venv.sh
#
# torch==2.13.0 resolves to the local CPU wheel (pip's find-links points at /opt/wheels).
set -euo pipefail

VENV="${AUTOROUND_INTEL_VENV:-$HOME/.cache/autoround-dev/intel-venv}"
PY="${PYTHON:-python3}"

if [ ! -x "$VENV/bin/python" ]; then
    mkdir -p "$(dirname "$VENV")"
    "$PY" -m venv "$VENV"
fi

want_ok() {
    "$VENV/bin/python" - <<'PY' 2>/dev/null
import importlib.metadata as m, sys
want = {"torch": "2.13.0", "auto-round": "0.16.1", "transformers": "5.23.", "compressed-tensors": "0.19.0"}
for name, ver in want.items():
    got = m.version(name)
    if not got.startswith(ver):
        sys.exit(1)
for name in ("gguf", "safetensors"):
    m.version(name)
PY
}

if want_ok; then
    echo "intel venv ready: $VENV"
    exit 0
fi

"$VENV/bin/python" -m pip install --upgrade pip
# torch first, so auto-round's deps do not pull a different torch build.
"$VENV/bin/python" -m pip install "torch==2.13.0"
# compressed-tensors: Intel's llm_compressor export needs it (0.19.0: the version the workspace locks).
"$VENV/bin/python" -m pip install "torch==2.13.0" "auto-round==0.16.1" "transformers==5.23.*" gguf safetensors \
    "compressed-tensors==0.19.0"
# torchvision (if any dependency pulled it) does not import beside torch 2.13.0+cpu.
"$VENV/bin/python" -m pip uninstall -y torchvision torchaudio torchcodec >/dev/null 2>&1 || true

want_ok || { echo "intel venv: version check failed" >&2; exit 1; }
"$VENV/bin/python" -c "import auto_round, torch, transformers; print('auto_round', auto_round.__version__, 'torch', torch.__version__, 'transformers', transformers.__version__)"
echo "intel venv ready: $VENV"
