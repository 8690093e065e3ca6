"""When model-free RTN can run, and when it is chosen without being asked for (Intel's rule).

Model-free RTN writes the ``auto_round`` format from integer schemes, quantized by plain
round-to-nearest. :func:`model_free_problem` says what an explicit request (``--model_free``,
:func:`~autoround.model_free.quantize_model_free`) cannot do; :func:`model_free_supported` is
Intel auto-round 0.16.1's automatic routing (``is_model_free_route``) in our terms: a run of
plain RTN (``iters=0`` with ``disable_opt_rtn``, the ``autoround-rtn`` recipe) writing
``auto_round`` with a default integer scheme of 2, 4 or 8 bits (or a 16-bit default), unless
``disable_model_free``. docs/model_free.md tells Intel's rule in full and where ours differs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from autoround.errors import SchemeError
from autoround.formats.auto_round import CAPABILITIES
from autoround.layer_plan import LayerConfig
from autoround.schemes import Scheme, parse_scheme

#: The one format model-free RTN writes.
MODEL_FREE_FORMAT = "auto_round"
#: The one algorithm it runs (``iters=0`` with ``disable_opt_rtn``).
MODEL_FREE_ALGORITHM = "rtn"
#: Bits of the default scheme for which Intel routes to model-free mode on its own
#: (``_SUPPORTED_INT_BITS``: its 3-bit packing is wrong, so 3 bits take the model path there).
INTEL_AUTO_BITS = (2, 4, 8)
#: Integer bits model-free RTN writes when asked for: what the ``auto_round`` packing stores.
MODEL_FREE_BITS = CAPABILITIES.bits


@dataclass(frozen=True)
class ModelFreeChoice:
    """Whether the automatic route takes model-free RTN, and why (or why not), in words."""

    supported: bool
    reason: str

    def __bool__(self) -> bool:
        return self.supported


def format_problem(formats: str | Sequence[str]) -> str | None:
    """Why model-free RTN cannot write ``formats`` (None: it can: ``auto_round`` alone)."""
    names = formats.split(",") if isinstance(formats, str) else list(formats)
    names = [name.strip().lower() for name in names]
    if names == [MODEL_FREE_FORMAT]:
        return None
    return f"format {','.join(names)!r}: model-free RTN writes only {MODEL_FREE_FORMAT!r}"


def scheme_problem(scheme: Scheme, where: str = "scheme") -> str | None:
    """Why model-free RTN cannot quantize with ``scheme`` (None: it can, or it keeps 16 bits)."""
    if not scheme.is_quantized:
        return None
    if scheme.data_type != "int":
        return (
            f"{where} has data_type {scheme.data_type!r}: model-free RTN quantizes integer schemes "
            f"only (data_type 'int', bits {list(MODEL_FREE_BITS)}, e.g. W4A16, W8A16, W2A16G64)"
        )
    if scheme.bits not in MODEL_FREE_BITS:
        return f"{where} has bits={scheme.bits}: model-free RTN writes bits {list(MODEL_FREE_BITS)}"
    return None


def model_free_problem(
    scheme: Scheme, formats: str | Sequence[str] = MODEL_FREE_FORMAT, layer_config: LayerConfig | None = None
) -> str | None:
    """What of a request model-free RTN cannot do (None: it can do all of it)."""
    problems = [format_problem(formats), scheme_problem(scheme)]
    named = _named(scheme, layer_config)
    problems += [scheme_problem(s, f"layer_config[{key!r}]") for key, s in named.items()]
    found = [p for p in problems if p is not None]
    return "; ".join(found) if found else None


def _named(scheme: Scheme, layer_config: LayerConfig | None) -> dict[str, Scheme]:
    """The schemes ``layer_config`` names (values the layer plan will refuse are left to it)."""
    named = {}
    for key, value in (layer_config or {}).items():
        try:
            named[key] = scheme.replace(**dict(value)) if isinstance(value, Mapping) else parse_scheme(value)
        except (SchemeError, TypeError):
            continue
    return named


def model_free_supported(
    scheme: Scheme,
    formats: str | Sequence[str] = MODEL_FREE_FORMAT,
    algorithm: str = MODEL_FREE_ALGORITHM,
    layer_config: LayerConfig | None = None,
) -> ModelFreeChoice:
    """Whether a run is routed to model-free RTN without being asked for, by Intel's rule.

    Intel 0.16.1 routes there when ``iters == 0`` and ``disable_opt_rtn`` (here: the run's
    ``algorithm`` is ``"rtn"``), the first format is ``auto_round`` and the default scheme is a
    weight-only integer scheme of 2, 4 or 8 bits (or keeps 16 bits). Ours also needs the
    format list to be ``auto_round`` alone and every ``layer_config`` scheme to be one
    model-free RTN writes; otherwise the run loads the model, as Intel's does for the rest.
    """
    if algorithm != MODEL_FREE_ALGORITHM:
        return ModelFreeChoice(
            False, f"the run uses {algorithm!r}; model-free is plain RTN (iters=0 with disable_opt_rtn)"
        )
    problem = model_free_problem(scheme, formats, layer_config)
    if problem is not None:
        return ModelFreeChoice(False, problem)
    if scheme.is_quantized and scheme.bits not in INTEL_AUTO_BITS:
        return ModelFreeChoice(
            False, f"{scheme.bits}-bit: model-free is chosen by default for bits {list(INTEL_AUTO_BITS)} only"
        )
    return ModelFreeChoice(True, "plain RTN of an integer scheme into auto_round: no model needed")
