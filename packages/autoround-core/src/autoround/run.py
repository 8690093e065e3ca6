"""The frozen description of one quantization run, and the one translation from Intel's arguments.

The CLI, :class:`autoround.AutoRound`, :func:`autoround.quantize` and the llm-compressor modifier
each turn their arguments into a :class:`Run` (or, for the modifier, the SignRound settings a
run holds) once; :mod:`autoround.runner` executes it. Which algorithm runs is decided here:
``iters > 0`` is SignRound; ``iters == 0`` is optimized RTN unless ``disable_opt_rtn``
(Intel's semantics, the CLI's too).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from autoround.algorithms import ALGORITHMS, OptRtnSettings, SignRoundSettings
from autoround.auto_scheme import AutoScheme
from autoround.errors import SchemeError
from autoround.formats import check_formats, run_scheme
from autoround.hardware import check_device
from autoround.intel_defaults import INTEL, SCHEME_OVERRIDES, IntelArgs, check_iters
from autoround.layer_plan import LayerConfig
from autoround.schemes import Scheme


@dataclass(frozen=True)
class CalibrationSpec:
    """Where calibration token ids come from: a dataset (spec string, path, texts or token ids;
    see :func:`autoround.calibration.build_calibration_set`), how many rows of how many tokens,
    and the sampling seed."""

    dataset: Any = INTEL.dataset
    nsamples: int = INTEL.nsamples
    seqlen: int = INTEL.seqlen
    seed: int = INTEL.seed


@dataclass(frozen=True)
class Run:
    """Everything a run decides before touching the model. Validated on creation.

    ``algorithm`` names an entry of :data:`autoround.algorithms.ALGORITHMS`; ``settings`` is that
    algorithm's frozen settings object (None for one that takes none). ``formats`` are the
    checkpoint formats to write (``"auto_round,auto_gptq"`` is split into two); ``device`` is where
    the work happens (None: where the weights live). With ``auto_scheme`` the per-layer schemes
    are searched first (:func:`autoround.runner.choose_schemes`), ``scheme`` standing in until
    then. ``low_cpu_mem_usage``: load a checkpoint block by block and save the same checkpoint
    from the resume store (None: where it changes nothing; see
    :func:`autoround.runner.use_low_cpu_mem`).
    """

    scheme: Scheme
    algorithm: str = "rtn"
    settings: Any = None
    layer_config: LayerConfig | None = None
    quant_lm_head: bool = False
    block_names: tuple[str, ...] | None = None
    calibration: CalibrationSpec = field(default_factory=CalibrationSpec)
    formats: tuple[str, ...] = ("auto_round",)
    device: torch.device | str | None = None
    low_gpu_mem_usage: bool = False
    auto_scheme: AutoScheme | None = None
    low_cpu_mem_usage: bool | None = None

    def __post_init__(self) -> None:
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"unknown algorithm {self.algorithm!r}; allowed: {sorted(ALGORITHMS)}")
        expected = ALGORITHMS[self.algorithm].settings_type
        if expected is None and self.settings is not None:
            raise TypeError(f"algorithm {self.algorithm!r} takes no settings, got {self.settings!r}")
        if expected is not None and not isinstance(self.settings, expected):
            raise TypeError(
                f"algorithm {self.algorithm!r} takes {expected.__name__}, got {type(self.settings).__name__}"
            )
        object.__setattr__(self, "formats", check_formats(self.formats))
        if self.low_cpu_mem_usage not in (None, True, False):
            raise ValueError(f"low_cpu_mem_usage must be True, False or None, got {self.low_cpu_mem_usage!r}")


def signround_settings(args: IntelArgs) -> SignRoundSettings:
    """SignRound's settings from Intel's argument names (the CLI, AutoRound, the modifier)."""
    return SignRoundSettings(
        iters=args.iters,
        lr=args.lr,
        minmax_lr=args.minmax_lr,
        batch_size=args.batch_size,
        gradient_accumulate_steps=args.gradient_accumulate_steps,
        enable_minmax_tuning=args.enable_minmax_tuning,
        keep_best=not args.not_use_best_mse,
        init_clipping=args.init_clipping,
        enable_alg_ext=args.enable_alg_ext,
        enable_quanted_input=args.enable_quanted_input,
        seed=args.seed,
        amp=args.amp,
    )


def _algorithm(args: IntelArgs) -> tuple[str, Any]:
    """Intel's rule: iters > 0 is SignRound, iters == 0 optimized RTN unless disable_opt_rtn."""
    if check_iters(args.iters) > 0:
        return "signround", signround_settings(args)
    if args.disable_opt_rtn:
        return "rtn", None
    if args.opt_rtn_settings is not None:
        return "opt_rtn", args.opt_rtn_settings
    return "opt_rtn", OptRtnSettings() if args.amp else OptRtnSettings(imatrix_dtype="float32")


def device_of(device_map: str | int | dict[str, Any] | None) -> str | None:
    """Intel's ``device_map`` as the device a run computes on: None/"auto" is CUDA where there is
    one (else where the weights live), an int a CUDA index; anything else is checked. A map of
    several devices ("0,1", a per-layer dict) is refused: tuning across devices is not built."""
    if isinstance(device_map, dict) or (isinstance(device_map, str) and "," in device_map):
        raise NotImplementedError(
            f"device_map={device_map!r} names several devices; tuning across several GPUs is not "
            f"built yet: pass one device (e.g. 'cuda:0')"
        )
    if device_map in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else None
    if isinstance(device_map, int):
        device_map = f"cuda:{device_map}"
    return str(check_device(device_map))


def _scheme(args: IntelArgs, formats: str | Sequence[str]) -> Scheme:
    """The scheme of Intel's arguments for a run writing ``formats`` (``args.scheme`` None: not
    given, so a GGUF recipe alone picks its own; :func:`autoround.formats.run_scheme`). With an
    :class:`AutoScheme`, its first quantized option stands in until the search."""
    if isinstance(args.scheme, AutoScheme):
        given = [name for name in SCHEME_OVERRIDES if getattr(args, name) is not None]
        if given:
            raise SchemeError(
                f"{given} override one scheme, but scheme is an AutoScheme whose options carry "
                f"their own: leave them out, or name the scheme with them in AutoScheme's options"
            )
        return next(s for s in args.scheme.schemes if s.is_quantized)
    return run_scheme(args.scheme, formats, **{name: getattr(args, name) for name in SCHEME_OVERRIDES})


def for_formats(run: Run, args: IntelArgs, formats: str | Sequence[str]) -> Run:
    """``run`` writing ``formats`` instead, its scheme chosen again from ``args`` for them."""
    return dataclasses.replace(run, formats=check_formats(formats), scheme=_scheme(args, formats))


def run_from_intel(args: IntelArgs, formats: str | tuple[str, ...] = ("auto_round",)) -> Run:
    """The :class:`Run` that Intel's arguments ``args`` describe."""
    algorithm, settings = _algorithm(args)
    return Run(
        scheme=_scheme(args, formats),
        algorithm=algorithm,
        settings=settings,
        layer_config=args.layer_config,
        quant_lm_head=args.quant_lm_head,
        calibration=CalibrationSpec(args.dataset, args.nsamples, args.seqlen, args.seed),
        formats=(formats,) if isinstance(formats, str) else formats,
        device=device_of(args.device_map),
        low_gpu_mem_usage=args.low_gpu_mem_usage,
        auto_scheme=args.scheme if isinstance(args.scheme, AutoScheme) else None,
    )
