"""llama.cpp's mixed recipes (``llama-quantize``'s file types): which tensor gets which block type.

A recipe (``q4_k_m``) has a default block type and llama.cpp's per-tensor choices
(``llama_tensor_get_type_impl`` in ``src/llama-quant.cpp``), restated here as tables: more bits
for ``attn_v`` and ``ffn_down`` in the layers ``use_more_bits`` picks (the first and last eighth
and every third one between), for ``attn_output`` in the ``q3_k`` recipes, and Q6_K (Q8_0 for
the ``q8_0`` recipe) for the output matrix, or for the token embedding when it is tied to the
output. The choices without an importance matrix are the ones made: llama.cpp also bumps
``ffn_down`` of ``q4_0`` / ``q5_0`` files to ``q4_1`` / ``q5_1`` in the first layers when given one.
Mixture-of-experts and fused-qkv rules are not restated (no such architecture is written here).

:func:`fallback` is llama.cpp's rule for a tensor whose rows a block type cannot hold (a row
length not a multiple of 256 for a K-quant): ``q2_k`` / ``q3_k`` -> ``q4_0``, ``q4_k`` -> ``q5_0``,
``q5_k`` -> ``q5_1``, ``q6_k`` -> ``q8_0``, and ``f16`` where even 32 does not divide the row.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import gguf

from autoround.dtypes.gguf_blocks import BLOCK_TYPES

#: The 16-bit type a tensor falls back to when no block type fits its rows.
F16 = "f16"
FALLBACK = {"q2_k": "q4_0", "q3_k": "q4_0", "q4_k": "q5_0", "q5_k": "q5_1", "q6_k": "q8_0"}

LayerRule = Callable[[int, int, "ModelShape"], str | None]


def use_more_bits(i_layer: int, n_layer: int) -> bool:
    """llama.cpp's ``use_more_bits``: the first and last eighth of the layers, and every third
    layer in between."""
    eighth = n_layer // 8
    return i_layer < eighth or i_layer >= 7 * n_layer // 8 or (i_layer - eighth) % 3 == 2


@dataclass(frozen=True)
class ModelShape:
    """What the choices depend on besides the tensor: the architecture and the head grouping."""

    arch: str
    n_layer: int
    n_gqa: int


def _when(condition: Callable[[int, int, ModelShape], bool], chosen: str) -> LayerRule:
    return lambda i, n, shape: chosen if condition(i, n, shape) else None


def _always(chosen: str) -> LayerRule:
    return lambda i, n, shape: chosen


@dataclass(frozen=True)
class Recipe:
    """One ``llama-quantize`` file type: its default block type and per-tensor rules (by llama.cpp's
    tensor category: ``attn_v``, ``ffn_down``, ``attn_output``)."""

    name: str
    default: str
    file_type: int
    rules: dict[str, LayerRule] = field(default_factory=dict)

    def choose(self, category: str, i_layer: int, shape: ModelShape) -> str:
        """The block type of a tensor of ``category`` in layer ``i_layer`` (before any fallback)."""
        rule = self.rules.get(category)
        chosen = rule(i_layer, shape.n_layer, shape) if rule is not None else None
        chosen = chosen or self.default
        if (
            category == "attn_v"
            and shape.arch == "llama"
            and shape.n_layer == 80
            and chosen in ("q3_k", "q4_k")
        ):
            chosen = "q5_k"  # llama.cpp's 70B rule: 8 heads share attn_v
        return chosen


def _ftype(name: str) -> int:
    return int(gguf.LlamaFileType[f"MOSTLY_{name.upper()}"])


def _recipe(name: str, default: str, rules: dict[str, LayerRule] | None = None) -> Recipe:
    return Recipe(name, default, _ftype(name), rules or {})


_MORE = _when(lambda i, n, s: use_more_bits(i, n), "q6_k")

#: Recipe name (lower case, llama-quantize's names) -> recipe.
RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in (
        _recipe("q4_0", "q4_0"),
        _recipe("q4_1", "q4_1"),
        _recipe("q5_0", "q5_0"),
        _recipe("q5_1", "q5_1"),
        _recipe("q8_0", "q8_0"),
        _recipe("q6_k", "q6_k"),
        _recipe(
            "q2_k",
            "q2_k",
            {
                "attn_v": lambda i, n, s: "q4_k" if s.n_gqa >= 4 else "q3_k",
                "ffn_down": _always("q3_k"),
                "attn_output": _always("q3_k"),
            },
        ),
        _recipe(
            "q2_k_s",
            "q2_k",
            {
                "attn_v": _when(lambda i, n, s: s.n_gqa >= 4, "q4_k"),
                "ffn_down": _when(lambda i, n, s: i < n // 8, "q4_k"),
            },
        ),
        _recipe("q3_k_s", "q3_k"),
        _recipe(
            "q3_k_m",
            "q3_k",
            {
                "attn_v": lambda i, n, s: "q5_k" if i < 2 else "q4_k",
                "ffn_down": lambda i, n, s: "q5_k" if i < n // 16 else "q4_k",
                "attn_output": _always("q4_k"),
            },
        ),
        _recipe(
            "q3_k_l",
            "q3_k",
            {"attn_v": _always("q5_k"), "ffn_down": _always("q5_k"), "attn_output": _always("q5_k")},
        ),
        _recipe(
            "q4_k_s",
            "q4_k",
            {
                "attn_v": _when(lambda i, n, s: i < 4, "q5_k"),
                "ffn_down": _when(lambda i, n, s: i < n // 8, "q5_k"),
            },
        ),
        _recipe("q4_k_m", "q4_k", {"attn_v": _MORE, "ffn_down": _MORE}),
        _recipe("q5_k_s", "q5_k"),
        _recipe("q5_k_m", "q5_k", {"attn_v": _MORE, "ffn_down": _MORE}),
    )
}
#: llama-quantize's aliases: a bare K type is its ``_m`` recipe.
ALIASES = {"q3_k": "q3_k_m", "q4_k": "q4_k_m", "q5_k": "q5_k_m"}


def block_size(type_name: str) -> int:
    """Weights per block of a ggml type (1 for the float types)."""
    entry = BLOCK_TYPES.get(type_name)
    return entry.block if entry is not None else 1


def fallback(type_name: str, ncols: int) -> str:
    """llama.cpp's ``tensor_type_fallback``: the type a tensor of rows ``ncols`` long gets."""
    if ncols % block_size(type_name) == 0:
        return type_name
    chosen = FALLBACK.get(type_name, type_name)
    return chosen if ncols % block_size(chosen) == 0 else F16


def category_of(gguf_name: str) -> str:
    """llama.cpp's tensor category of a GGUF tensor name (``tensor_get_category``)."""
    if gguf_name == "output.weight":
        return "output"
    if gguf_name == "token_embd.weight":
        return "token_embd"
    for part in ("attn_v", "attn_k", "attn_q", "attn_output", "ffn_up", "ffn_gate", "ffn_down"):
        if f"{part}.weight" in gguf_name or (part.startswith("ffn") and part in gguf_name):
            return part
    return "other"


def choose(recipe: Recipe, gguf_name: str, ncols: int, shape: ModelShape, tied: bool) -> str:
    """llama.cpp's type for one 2-D weight of a model being quantized with ``recipe``, before
    :func:`fallback`: the output rule, the tied embedding's, then the per-layer rules."""
    category = category_of(gguf_name)
    if category == "output" or (tied and category == "token_embd"):
        # a row no default block holds, or a q8_0 recipe: q8_0; otherwise q6_k
        fits = ncols % block_size(recipe.default) == 0
        chosen = "q6_k" if fits and recipe.default != "q8_0" else "q8_0"
    elif category == "token_embd":
        chosen = recipe.default
    else:
        i_layer = int(gguf_name.split(".")[1]) if gguf_name.startswith("blk.") else 0
        chosen = recipe.choose(category, i_layer, shape)
    return chosen


def recipe_named(name: str) -> Recipe:
    """The recipe of a name (``q4_k_m``; a bare ``q4_k`` is its ``_m`` recipe, as in llama-quantize)."""
    key = ALIASES.get(name.lower(), name.lower())
    return RECIPES[key]
