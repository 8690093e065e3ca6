"""``autoround-lm-eval``: lm-eval's own command line, unchanged, with autoround-hf installed first.

transformers reads ``quant_method: auto-round`` checkpoints with autoround's quantizer only once
``autoround_hf`` is imported; lm-eval's ``lm_eval`` command cannot do that itself. So::

    autoround-lm-eval --model hf --model_args pretrained=out/smollm2-w4a16 --tasks ...

is ``lm_eval --model hf ...`` with autoround checkpoints loading on autoround's kernels, every
argument and output lm-eval's. (``lm_eval --model vllm`` needs no wrapper: vLLM loads the
autoround-vllm plugin from its entry point.)
"""

from __future__ import annotations

import sys

from autoround.errors import UsageError
from autoround.eval.lm_eval_runner import EVAL_BACKENDS, require_lm_eval


def main() -> None:
    """Entry point of ``autoround-lm-eval``; arguments are lm-eval's (``sys.argv``)."""
    try:
        require_lm_eval()
        EVAL_BACKENDS["hf"].prepare()  # imports autoround_hf, which installs its quantizer
    except UsageError as exc:
        sys.exit(f"autoround-lm-eval: error: {exc}")
    from lm_eval.__main__ import cli_evaluate

    cli_evaluate()


if __name__ == "__main__":
    main()
