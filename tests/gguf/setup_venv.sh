#!/usr/bin/env bash
# Create, or reuse, the llama-cpp-python venv that tests/gguf/ and bench/gguf_cpu.py run
# llama.cpp in. llama-cpp-python compiles llama.cpp from its source distribution (several
# minutes on two cores), so the venv is cached, keyed by a hash of this script and the
# requirements (which pin its version): a change rebuilds it. Nothing of ours is installed in it;
# the tests hand it GGUF files and read back JSON.
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV="${AUTOROUND_LLAMACPP_VENV:-$HOME/.cache/autoround-dev/llamacpp-venv}"
KEY="$(cat tests/gguf/setup_venv.sh tests/gguf/venv-requirements.txt | sha256sum | cut -c1-16)"
if [[ -x "$VENV/bin/python" && "$(cat "$VENV/.autoround-key" 2>/dev/null)" == "$KEY" ]]; then
  echo "llama.cpp venv $VENV is current ($KEY)"
  exit 0
fi
echo "building the llama.cpp venv at $VENV ($KEY; compiles llama.cpp, minutes)"
rm -rf "$VENV"
python3 -m venv "$VENV"
# CPU only; no server, examples or tests; multimodal (mtmd) off. Native ISA of this machine.
export CMAKE_ARGS="-DGGML_NATIVE=ON -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAVA_BUILD=OFF -DMTMD_BUILD=OFF"
CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" "$VENV/bin/pip" install -q -r tests/gguf/venv-requirements.txt
"$VENV/bin/python" -c "import llama_cpp; print('llama_cpp', llama_cpp.__version__)"
echo "$KEY" > "$VENV/.autoround-key"
echo "llama.cpp venv ready"
