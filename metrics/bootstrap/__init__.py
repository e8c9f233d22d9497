"""Item-level bootstrap for MIC metrics: a counter-based RNG, resampling kernels and intervals.

Public API (see each module for details):

* :mod:`metrics.bootstrap.rng`: ``item_keys``, ``stratum_keys`` and the stateless counter RNG.
* :mod:`metrics.bootstrap.kernels`: ``weighted_group_sums`` (all replicates of per-group weighted
  sums in one pass) and ``replicate_weight_totals`` (the RNG-only kernel), with numpy references.
"""

from metrics.bootstrap.kernels import (
    replicate_weight_totals,
    weighted_group_sums,
)
from metrics.bootstrap.rng import item_keys, stratum_keys

__all__ = [
    "item_keys",
    "replicate_weight_totals",
    "stratum_keys",
    "weighted_group_sums",
]
