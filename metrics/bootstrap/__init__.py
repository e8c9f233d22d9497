"""Item-level bootstrap for MIC metrics: a counter-based RNG, resampling kernels and intervals.

* :mod:`metrics.bootstrap.rng`: stable item / stratum keys and the stateless counter RNG
  (SplitMix64 mix of ``(seed, stratum, item, replicate)``; Poisson(1) by exact inversion).
* :mod:`metrics.bootstrap.kernels`: :func:`weighted_group_sums`, all replicates of per-group
  weighted sums in one parallel pass, and :func:`replicate_weight_totals`, the RNG-only kernel;
  each beside a numpy reference.
* :mod:`metrics.bootstrap.intervals`: percentile and BCa intervals (scipy's conventions, NaN
  replicates dropped, degenerate groups flagged) and the closed-form acceleration of a mean.
* :mod:`metrics.bootstrap.mean`: :func:`bootstrap_mean`, the whole thing for one mean.
"""

from metrics.bootstrap._validate import METHODS, SCHEMES
from metrics.bootstrap.intervals import (
    Interval,
    bca_interval,
    bias_correction,
    mean_acceleration,
    percentile_interval,
)
from metrics.bootstrap.kernels import (
    item_weights_reference,
    replicate_weight_totals,
    replicate_weight_totals_reference,
    weighted_group_sums,
    weighted_group_sums_reference,
)
from metrics.bootstrap.mean import BootstrapMeanResult, bootstrap_mean, mean_replicates
from metrics.bootstrap.rng import item_keys, stratum_keys

__all__ = [
    "METHODS",
    "SCHEMES",
    "BootstrapMeanResult",
    "Interval",
    "bca_interval",
    "bias_correction",
    "bootstrap_mean",
    "item_keys",
    "item_weights_reference",
    "mean_acceleration",
    "mean_replicates",
    "percentile_interval",
    "replicate_weight_totals",
    "replicate_weight_totals_reference",
    "stratum_keys",
    "weighted_group_sums",
    "weighted_group_sums_reference",
]
