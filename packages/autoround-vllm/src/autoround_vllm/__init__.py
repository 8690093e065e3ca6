"""vLLM and SGLang quantization methods for autoround checkpoints.

Not built yet: the plugin (entry point ``vllm.general_plugins``) lands with the vLLM issue.
"""

__all__: list[str] = []
