"""AutoScheme: a mixed-precision plan searched per layer under a bit budget (docs/auto_scheme.md).

:class:`AutoScheme` says what is asked (Intel auto-round's fields); :func:`search_space` reads the
model, the pins and the budget (refusing a budget the options cannot meet, before any work);
:func:`search` measures each unit's error at each option block by block and chooses, returning a
:class:`SchemePlan` whose ``layer_config`` the ordinary layer plan takes.
"""

from autoround.auto_scheme.bits import group_count, layer_bits
from autoround.auto_scheme.config import AutoScheme, check_options
from autoround.auto_scheme.search import SchemePlan, search
from autoround.auto_scheme.space import SearchSpace, Unit, search_space

__all__ = [
    "AutoScheme",
    "SchemePlan",
    "SearchSpace",
    "Unit",
    "check_options",
    "group_count",
    "layer_bits",
    "search",
    "search_space",
]
