"""``bootstrap_mean``: the item bootstrap of one mean, end to end (kernel + interval)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from engine.errors import UserError
from metrics.bootstrap._validate import check_level, check_method, check_n_boot, check_scheme
from metrics.bootstrap.intervals import bca_interval, mean_acceleration, percentile_interval
from metrics.bootstrap.kernels import weighted_group_sums

__all__ = ["BootstrapMeanResult", "bootstrap_mean", "mean_replicates"]


@dataclass(frozen=True)
class BootstrapMeanResult:
    """The bootstrap confidence interval of a mean.

    Attributes:
        theta_hat: The sample mean.
        low: Lower endpoint (NaN if ``n_boot == 0``).
        high: Upper endpoint (NaN if ``n_boot == 0``).
        standard_error: Standard deviation (ddof 1) of the valid replicate means.
        method: ``"bca"`` or ``"percentile"``.
        level: Confidence level.
        scheme: ``"poisson"`` or ``"multinomial"``.
        n_items: Number of values (items).
        n_boot: Number of replicates B.
        seed: The seed.
        n_dropped: Replicates dropped as NaN (a Poisson replicate that drew no item).
        degenerate: True if the interval was collapsed to ``[theta_hat, theta_hat]`` (all values
            equal, or replicates without spread).
        bootstrap_distribution: The replicate means (only with ``keep_distribution=True``).
    """

    theta_hat: float
    low: float
    high: float
    standard_error: float
    method: str
    level: float
    scheme: str
    n_items: int
    n_boot: int
    seed: int
    n_dropped: int
    degenerate: bool
    bootstrap_distribution: np.ndarray | None = field(default=None, repr=False, compare=False)


def _as_values(x: npt.ArrayLike) -> np.ndarray:
    values = np.asarray(x, dtype=np.float64)
    if values.ndim != 1 or values.size == 0:
        raise UserError(
            f"bootstrap_mean: x must be a non-empty 1-D array (one value per item), "
            f"got shape {values.shape}",
            "pass one value per item",
        )
    if not np.isfinite(values).all():
        raise UserError(
            f"bootstrap_mean: x has a non-finite value at item {int(np.argmax(~np.isfinite(values)))}",
            "drop or impute missing values first",
        )
    return values


def mean_replicates(
    x: npt.ArrayLike,
    *,
    n_boot: int,
    seed: int,
    scheme: str = "poisson",
    item_keys: npt.ArrayLike | None = None,
) -> np.ndarray:
    """Replicate means ``sum_i w(b, i) x_i / sum_i w(b, i)`` of one value per item.

    With Poisson weights the replicate size varies, so the ratio of sums is the mean estimator;
    a replicate that drew no item gives NaN.

    Args:
        x: One value per item.
        n_boot: Number of replicates B.
        seed: Integer seed.
        scheme: ``"poisson"`` or ``"multinomial"``.
        item_keys: Stable uint64 key per item (see :func:`metrics.bootstrap.item_keys`); items
            with the same keys get the same weights across calls (paired bootstrap). Default:
            the positions ``0 .. n - 1``.

    Returns:
        float64 array ``[n_boot]``.
    """
    values = _as_values(x)
    n = values.size
    keys = np.arange(n, dtype=np.uint64) if item_keys is None else item_keys
    sums = weighted_group_sums(
        np.arange(n + 1),
        keys,
        None,
        np.zeros(n, dtype=np.int64),
        np.column_stack([values, np.ones(n)]),
        seed,
        n_boot,
        scheme,
        n_groups=1,
    )
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums[:, 0, 0] / sums[:, 0, 1]


def bootstrap_mean(
    x: npt.ArrayLike,
    *,
    n_boot: int,
    seed: int,
    method: str = "bca",
    level: float = 0.95,
    scheme: str = "poisson",
    item_keys: npt.ArrayLike | None = None,
    keep_distribution: bool = False,
) -> BootstrapMeanResult:
    """Bootstrap confidence interval of the mean of one value per item.

    Args:
        x: One value per item (finite).
        n_boot: Number of replicates B (0: no interval, NaN endpoints).
        seed: Integer seed in ``[0, 2**64)``.
        method: ``"bca"`` (closed-form jackknife acceleration, no leave-one-out loop) or
            ``"percentile"``.
        level: Confidence level in (0, 1).
        scheme: ``"poisson"`` or ``"multinomial"``.
        item_keys: Stable uint64 key per item; the same keys give the same draws (paired).
            Default: positions.
        keep_distribution: Keep the replicate means in the result.

    Returns:
        A :class:`BootstrapMeanResult`.

    Raises:
        UserError: On a bad option or input.
    """
    n_boot = check_n_boot(n_boot)
    method = check_method(method)
    level = check_level(level)
    scheme = check_scheme(scheme)
    values = _as_values(x)
    theta_hat = float(values.mean())
    reps = mean_replicates(values, n_boot=n_boot, seed=seed, scheme=scheme, item_keys=item_keys)
    if method == "bca":
        # Centered sums avoid cancellation; the acceleration is shift-invariant.
        d = values - theta_hat
        accel = mean_acceleration(values.size, d.sum(), (d * d).sum(), (d * d * d).sum())
        interval = bca_interval(theta_hat, reps, accel, level)
    else:
        interval = percentile_interval(reps, level, theta_hat=theta_hat)
    all_equal = bool(values.max() == values.min())
    valid = reps[~np.isnan(reps)]
    std_err = float(np.std(valid, ddof=1)) if valid.size > 1 else float("nan")
    degenerate = (all_equal or bool(interval.degenerate)) and n_boot > 0
    low, high = float(interval.low), float(interval.high)
    if degenerate:
        low = high = theta_hat
        if all_equal:
            std_err = 0.0  # replicate means of equal values differ only by rounding
    return BootstrapMeanResult(
        theta_hat=theta_hat,
        low=low,
        high=high,
        standard_error=std_err,
        method=method,
        level=level,
        scheme=scheme,
        n_items=int(values.size),
        n_boot=n_boot,
        seed=int(seed),
        n_dropped=int(interval.n_dropped),
        degenerate=degenerate,
        bootstrap_distribution=reps if keep_distribution else None,
    )
