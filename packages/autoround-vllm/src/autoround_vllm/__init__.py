"""vLLM and SGLang quantization methods for autoround checkpoints.

Installing this package is all a vLLM user does: vLLM loads :func:`autoround_vllm.vllm_plugin.register`
from the ``vllm.general_plugins`` entry point in every process, which registers the method
``autoround``. SGLang loads :func:`autoround_vllm.sglang_plugin.register` from its
``sglang.srt.plugins`` entry point. Neither engine is imported by importing this package.
"""

from autoround_vllm.selection import METHOD_NAME, choose_method, stock_vllm_gap

__all__ = ["METHOD_NAME", "choose_method", "stock_vllm_gap"]
