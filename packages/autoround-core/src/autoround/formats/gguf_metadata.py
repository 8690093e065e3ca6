"""What a GGUF file says besides its tensors: the architecture's hyperparameters and the tokenizer,
as llama.cpp's ``convert_hf_to_gguf.py`` writes them, through the ``gguf`` package's writer.

:data:`ARCHITECTURES` lists the transformers ``model_type`` values written here (dense decoders
with the default RoPE). Anything else is refused by :func:`architecture_of`, naming it, before
any work. The tokenizer must be a byte-level BPE one (``tokenizer.ggml.model = "gpt2"``: Llama 3,
SmolLM, Qwen, Mistral's Tekken-free BPE models); its pre-tokenizer is recognized as
``convert_hf_to_gguf.py`` does, by hashing the token ids of a fixed text (:data:`PRE_TOKENIZERS`
holds the few hashes of the families written here; another BPE tokenizer gets ``"default"``,
with a warning).
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
from dataclasses import dataclass
from typing import Any

import gguf

from autoround.errors import FormatError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Architecture:
    """How one transformers architecture is written: llama.cpp's name for it, and whether the
    q/k projection rows are permuted from transformers' RoPE layout to ggml's (llama family)."""

    gguf_arch: str
    permute_qk: bool
    llama_keys: bool  # vocab_size and rope.dimension_count, as convert_hf_to_gguf's LlamaModel adds


#: transformers ``model_type`` -> how it is written.
ARCHITECTURES: dict[str, Architecture] = {
    "llama": Architecture("llama", permute_qk=True, llama_keys=True),
    "mistral": Architecture("llama", permute_qk=True, llama_keys=True),
    "qwen2": Architecture("qwen2", permute_qk=False, llama_keys=False),
    "qwen3": Architecture("qwen3", permute_qk=False, llama_keys=False),
}

#: ``convert_hf_to_gguf.py``'s probe text: its token ids' sha256 names the pre-tokenizer.
PROBE_TEXT = (
    "\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n🚀 (normal) 😶\u200d🌫️ (multiple emojis concatenated) "
    "✅ 🦙🦙 3 33 333 3333 33333 333333 3333333 33333333 3.3 3..3 3...3 "
    "កាន់តែពិសេសអាច😁 ?我想在apple工作1314151天～ "
    "------======= нещо на Български ''''''```````\"\"\"\"......!!!!!!?????? I've been 'told he's there, "
    "'RE you sure? 'M not sure I'll make it, 'D you like some tea? We'Ve a'lL"
)
#: sha256 of the probe's ids -> llama.cpp's pre-tokenizer name (the families written here).
PRE_TOKENIZERS = {
    "855059429035d75a914d1eda9f10a876752e281a054a7a3d421ef0533e5b6249": "smollm",
    "0ef9807a4087ebef797fc749390439009c3b9eda9ad1a097abbe738f486c01e5": "llama-bpe",
    "e636dc30a262dcc0d8c323492e32ae2b70728f4df7dfe9737d9f920a282b8aea": "qwen2",
    "d4540891389ea895b53b399da6ac824becc30f2fba0e9ddbb98f92e55ca0e97c": "qwen2",
    "3ce83efda5659b07b1ad37ca97ca5797ea4285d9b9ab0dc679e4a720c9da7454": "gpt-2",
}


def _rope(config: Any) -> dict[str, Any]:
    params = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    params = dict(params)
    if "rope_theta" not in params and getattr(config, "rope_theta", None) is not None:
        params["rope_theta"] = config.rope_theta
    return params


def architecture_of(config: Any) -> Architecture:
    """How ``config``'s model is written.

    Raises:
        FormatError: an architecture (or RoPE variant) the GGUF writer does not know, named.
    """
    model_type = getattr(config, "model_type", None)
    if model_type not in ARCHITECTURES:
        raise FormatError(
            f"the GGUF writer does not know architecture {model_type!r}; it writes {sorted(ARCHITECTURES)}"
        )
    rope_type = _rope(config).get("rope_type", "default")
    if rope_type not in (None, "default"):
        raise FormatError(
            f"{model_type} with rope_type {rope_type!r}: the GGUF writer handles the default RoPE only"
        )
    return ARCHITECTURES[model_type]


def write_hparams(
    writer: gguf.GGUFWriter, config: Any, arch: Architecture, name: str, file_type: int
) -> None:
    """The ``general.*`` and ``{arch}.*`` keys ``convert_hf_to_gguf.py`` writes for this model."""
    writer.add_name(name)
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(getattr(config, "num_key_value_heads", None) or config.num_attention_heads)
    theta = _rope(config).get("rope_theta")
    if theta is not None:
        writer.add_rope_freq_base(float(theta))
    writer.add_layer_norm_rms_eps(float(config.rms_norm_eps))
    head_dim = getattr(config, "head_dim", None)
    if head_dim is not None:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    writer.add_file_type(file_type)
    if arch.llama_keys:
        writer.add_vocab_size(config.vocab_size)
        writer.add_rope_dimension_count(head_dim or config.hidden_size // config.num_attention_heads)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)


def pre_tokenizer(tokenizer: Any) -> str:
    """llama.cpp's name for the tokenizer's pre-tokenizer, by ``convert_hf_to_gguf.py``'s hash."""
    digest = hashlib.sha256(str(tokenizer.encode(PROBE_TEXT)).encode()).hexdigest()
    if digest not in PRE_TOKENIZERS:
        logger.warning("pre-tokenizer not recognized (hash %s): written as 'default'", digest)
    return PRE_TOKENIZERS.get(digest, "default")


def _token_list(tokenizer: Any, vocab_size: int) -> tuple[list[str], list[int]]:
    """Tokens and their types by id, as ``convert_hf_to_gguf.py``'s ``get_vocab_base``."""
    reverse = {index: token for token, index in tokenizer.get_vocab().items()}
    added = tokenizer.get_added_vocab()
    decoder = tokenizer.added_tokens_decoder
    tokens: list[str] = []
    types: list[int] = []
    for index in range(vocab_size):
        if index not in reverse:
            tokens.append(f"[PAD{index}]")
            types.append(gguf.TokenType.UNUSED)
            continue
        token = reverse[index]
        if token in added:
            special = decoder[index].special if index in decoder else False
            types.append(gguf.TokenType.CONTROL if special else gguf.TokenType.USER_DEFINED)
        else:
            types.append(gguf.TokenType.NORMAL)
        tokens.append(token)
    return tokens, types


def check_tokenizer(tokenizer: Any) -> None:
    """Refuse, before any work, a tokenizer the GGUF writer cannot write (not byte-level BPE)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    kind = type(backend.model).__name__ if backend is not None else type(tokenizer).__name__
    if kind != "BPE":
        raise FormatError(
            f"the GGUF writer writes byte-level BPE tokenizers (tokenizer.ggml.model 'gpt2'); "
            f"this one is {kind}"
        )


def write_tokenizer(writer: gguf.GGUFWriter, tokenizer: Any, vocab_size: int) -> None:
    """``tokenizer.ggml.*``: the BPE vocabulary, merges and special tokens (the ``gguf`` package's
    ``SpecialVocab`` reads them from the tokenizer's saved files)."""
    check_tokenizer(tokenizer)
    tokens, types = _token_list(tokenizer, vocab_size)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre_tokenizer(tokenizer))
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    with tempfile.TemporaryDirectory() as folder:
        tokenizer.save_pretrained(folder)
        special = gguf.SpecialVocab(folder, load_merges=True, n_vocab=vocab_size)
    special.add_to_gguf(writer, quiet=True)
