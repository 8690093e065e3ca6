"""``import autoround`` and the model-free command import no transformers (nor datasets, lm-eval,
accelerate, scikit-learn): the public names load on first use (PEP 562), and model-free RTN never
needs the model-based stack, whose imports took 6-7 s of the command's time (docs/model_free.md)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

import autoround
import autoround.api
import autoround.schemes

HEAVY = {"transformers", "datasets", "lm_eval", "accelerate", "sklearn"}


def heavy_imports(code: str) -> list[str]:
    """The HEAVY packages in ``sys.modules`` after a fresh interpreter runs ``code``."""
    probe = "import sys\nprint(' '.join(sorted({m.split('.')[0] for m in sys.modules})))"
    done = subprocess.run(
        [sys.executable, "-c", f"{textwrap.dedent(code)}\n{probe}"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return sorted(HEAVY & set(done.stdout.split()))


@pytest.mark.parametrize(
    "code",
    [
        "import autoround",
        "from autoround import Scheme, parse_scheme, __version__",
        "import autoround.cli.commands",
        "import autoround.model_free",
    ],
)
def test_import_needs_no_transformers(code: str) -> None:
    assert heavy_imports(code) == []


def test_every_public_name_resolves_to_its_module_object() -> None:
    names: dict[str, object] = {}
    exec("from autoround import *", names)
    assert set(autoround.__all__) <= set(names)
    assert all(getattr(autoround, name) is names[name] for name in autoround.__all__)
    assert autoround.quantize is autoround.api.quantize
    assert autoround.Scheme is autoround.schemes.Scheme
    assert set(autoround.__all__) <= set(dir(autoround))
    with pytest.raises(AttributeError, match="no_such_name"):
        _ = autoround.no_such_name  # type: ignore[attr-defined]


def test_the_model_free_command_imports_no_transformers(tmp_path, tiny_llama_bf16, tiny_tokenizer) -> None:
    source, output = tmp_path / "src", tmp_path / "out"
    tiny_llama_bf16.save_pretrained(source)
    tiny_tokenizer.save_pretrained(source)
    run = f"""
        from autoround.cli.commands import main_rtn
        argv = ["--model", {str(source)!r}, "--model_free", "--output_dir", {str(output)!r}, "-q"]
        assert main_rtn(argv) == 0
    """
    assert heavy_imports(run) == []
    assert (output / "config.json").is_file()
