"""Intel auto-round's argument names and defaults, in one table.

The CLI, :class:`autoround.AutoRound`, the llm-compressor modifier, :class:`SignRoundSettings`
and the checkpoint's record of the tuning settings all take their defaults from :data:`INTEL`,
so a default changes in one place. Intel's spellings (``not_use_best_mse``, ``disable_opt_rtn``)
live only here and at the edges that accept Intel's arguments; core settings use positive
names.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from autoround.calibration.spec import DEFAULT_DATASET


@dataclass(frozen=True)
class IntelArgs:
    """The arguments of an Intel-style run, by Intel's names; the defaults are Intel's.

    An instance holds what a caller passed (``dataclasses.replace(INTEL, **kwargs)`` refuses a
    misspelled name with a TypeError); :func:`autoround.run.run_from_intel` turns it into a
    :class:`autoround.run.Run`. Three fields are ours, marked below.
    """

    scheme: Any = "W4A16"
    bits: int | None = None
    group_size: int | None = None
    sym: bool | None = None
    data_type: str | None = None
    act_bits: int | None = None
    act_group_size: int | None = None
    act_sym: bool | None = None
    act_data_type: str | None = None
    act_dynamic: bool | None = None
    layer_config: Any = None
    iters: int = 200
    lr: float | None = None
    minmax_lr: float | None = None
    nsamples: int = 128
    seqlen: int = 2048
    batch_size: int = 8
    gradient_accumulate_steps: int = 1
    enable_minmax_tuning: bool = True
    enable_quanted_input: bool = True
    not_use_best_mse: bool = False
    disable_opt_rtn: bool = False
    seed: int = 42
    amp: bool = True
    low_gpu_mem_usage: bool = False
    quant_lm_head: bool = False
    dataset: Any = DEFAULT_DATASET
    device_map: str | int | dict[str, Any] | None = None
    #: Ours differs (Intel: False): see :mod:`autoround.algorithms.scale_init`.
    enable_alg_ext: bool = True
    #: Ours: where SignRound's clipping factors start ("minmax" is Intel's start).
    init_clipping: str = "minmax"
    #: Ours: how optimized RTN searches (None: its default, float32 importance without ``amp``).
    opt_rtn_settings: Any = None


#: The arguments that override a field of the scheme (None: keep the scheme's own).
SCHEME_OVERRIDES = (
    "bits",
    "group_size",
    "sym",
    "data_type",
    "act_bits",
    "act_group_size",
    "act_sym",
    "act_data_type",
    "act_dynamic",
)

#: The table every entry point reads its defaults from.
INTEL = IntelArgs()
#: Every argument name the table knows.
INTEL_ARG_NAMES = frozenset(f.name for f in dataclasses.fields(IntelArgs))

#: Intel arguments that only tune its own runtime: accepted with a warning, no effect here.
NO_EFFECT_ARGS = frozenset(
    {"platform", "nblocks", "enable_norm_bias_tuning", "momentum", "device", "to_quant_block_names"}
)

#: Recipes (the recipe commands and Intel's "light"/"best" presets) as changes to the table.
RECIPES: MappingProxyType[str, MappingProxyType[str, Any]] = MappingProxyType(
    {
        "default": MappingProxyType({}),
        "best": MappingProxyType({"iters": 1000, "nsamples": 512}),
        "light": MappingProxyType({"iters": 50, "lr": 5e-3}),
        "opt-rtn": MappingProxyType({"iters": 0}),
        "rtn": MappingProxyType({"iters": 0, "disable_opt_rtn": True}),
    }
)


def recipe(name: str) -> MappingProxyType[str, Any]:
    """A recipe's changes to :data:`INTEL`; an unknown name raises ValueError listing the known ones."""
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; allowed: {sorted(RECIPES)}")
    return RECIPES[name]


def check_iters(iters: object, at_least: int = 0) -> int:
    """``iters`` as an int >= ``at_least``, else ValueError naming the value (the one check)."""
    if isinstance(iters, bool) or not isinstance(iters, int) or iters < at_least:
        raise ValueError(f"iters must be an integer >= {at_least}, got {iters!r}")
    return iters


def intel_args(**kwargs: Any) -> IntelArgs:
    """:data:`INTEL` with ``kwargs`` on top; a name the table lacks raises TypeError naming it."""
    unknown = sorted(set(kwargs) - INTEL_ARG_NAMES)
    if unknown:
        raise TypeError(f"unexpected argument(s) {unknown}; allowed: {sorted(INTEL_ARG_NAMES)}")
    return dataclasses.replace(INTEL, **kwargs)
