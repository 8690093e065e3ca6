#!/usr/bin/env bash
# Create, or reuse, the SGLang venv that tests/sglang/ run SGLang in (about 6.3 GB).
# SGLang stays out of the workspace env (see docs/sglang.md): it pins torch==2.14.1, which pip
# takes here from local files (a CUDA build that runs on the CPU), and it imports torchvision,
# which loads only beside its own torch. The venv is keyed by a hash of this script, the
# requirements and the pyproject files of the packages installed into it: any change rebuilds it.
# Our packages are installed editable (for the sglang.srt.plugins entry point);
# tests/sglang/sglang_harness.py puts the running checkout's sources first on PYTHONPATH, so
# checkouts share the venv.
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV="${AUTOROUND_SGLANG_VENV:-$HOME/.cache/autoround-dev/sglang-venv}"
SGLANG="sglang==0.5.23"
KEY_FILES=(tests/sglang/setup_venv.sh tests/sglang/venv-requirements.txt
  packages/autoround-core/pyproject.toml packages/autoround-vllm/pyproject.toml)
KEY="$(cat "${KEY_FILES[@]}" | sha256sum | cut -c1-16)"
if [[ -x "$VENV/bin/python" && "$(cat "$VENV/.autoround-key" 2>/dev/null)" == "$KEY" ]]; then
  echo "sglang venv $VENV is current ($KEY)"
  exit 0
fi
echo "building the sglang venv at $VENV ($KEY; about 6.3 GB, 2-5 minutes)"
rm -rf "$VENV"
python3 -m venv "$VENV"
"$VENV/bin/pip" install -q -r tests/sglang/venv-requirements.txt
# --no-deps: SGLang 0.5.23's requirements cannot all be met on a machine without CUDA, and most
# are CUDA kernels. Left out: sglang-kernel==0.4.10 (PyPI's only build is for CUDA: `import
# sgl_kernel` fails without libcuda.so.1; SGLang's CPU kernels are not on PyPI, which is why its
# engine cannot start here: docs/sglang.md), flashinfer_python[cu13], flash-attn-4,
# humming-kernels, nvidia-cutlass-dsl, quack-kernels, sgl-deep-ep, sgl-deep-gemm, sgl-flash-mla,
# tilelang, torch_memory_saver, nvshmem4py-cu13, torchaudio==2.11.0 and torchcodec (audio and
# video), and serving extras the tests never reach (anthropic, outlines, llguidance, modelscope,
# timm, ...). venv-requirements.txt has what SGLang's config, layer, plugin and engine modules import.
"$VENV/bin/pip" install -q --no-deps "$SGLANG"
"$VENV/bin/pip" install -q --no-deps -e packages/autoround-core -e packages/autoround-vllm
"$VENV/bin/python" -c "import sglang.srt.layers.quantization, sglang.srt.entrypoints.engine, autoround_vllm.sglang_plugin"
echo "$KEY" > "$VENV/.autoround-key"
echo "sglang venv ready"
