"""Bootstrap sums as Ray tasks over item shards (`mic analyze --bootstrap B --ray [ADDRESS]`).

The analysis (`metrics`) never imports Ray: it takes a `group_sums` function, and this module
supplies one that splits the items into shards, sums each shard in a Ray task and adds the
partial sums on the driver. With Poisson(1) weights keyed by item, a replicate's sum is a sum over
items, so the sharded result equals the single-process one up to the order of additions.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from engine.errors import UserError


def _shard_sums(ptr, keys, strata, group, values, seed, n_boot, scheme, n_groups):
    from metrics.bootstrap import weighted_group_sums

    return weighted_group_sums(
        ptr, keys, strata, group, values, seed, n_boot, scheme, n_groups=n_groups
    )


def shard_bounds(ptr: np.ndarray, n_shards: int) -> list[tuple[int, int]]:
    """Item ranges [i0, i1) of about equal row counts (an item's rows never split)."""
    n_items = len(ptr) - 1
    if n_items == 0:
        return []
    targets = np.linspace(0, ptr[-1], n_shards + 1)[1:-1]
    cuts = np.unique(np.r_[0, np.searchsorted(ptr, targets), n_items])
    return [(int(a), int(b)) for a, b in zip(cuts[:-1], cuts[1:]) if b > a]


def ray_group_sums(address: str | None = None, n_shards: int | None = None) -> Callable:
    """A `group_sums` function for `metrics.analyze` that runs each item shard as a Ray task.

    Args:
        address: Ray cluster address; None starts (or joins) a local Ray.
        n_shards: shards per call (default: the cluster's CPU count, at least 2).
    """

    def group_sums(ptr, keys, strata, group, values, seed, n_boot, scheme, n_groups):
        if scheme != "poisson":
            raise UserError(
                f"--ray with --scheme {scheme}: multinomial draws are per task, not per item, so "
                "shard sums do not add up",
                "use --scheme poisson with --ray",
            )
        import ray

        from engine.runner import init_ray

        init_ray(address)
        k = n_shards or max(2, int(ray.cluster_resources().get("CPU", 2)))
        task = ray.remote(num_cpus=1)(_shard_sums)
        refs = []
        for i0, i1 in shard_bounds(ptr, k):
            r0, r1 = int(ptr[i0]), int(ptr[i1])
            refs.append(
                task.remote(
                    ptr[i0 : i1 + 1] - r0,
                    keys[i0:i1],
                    strata[i0:i1],
                    group[r0:r1],
                    values[r0:r1],
                    seed,
                    n_boot,
                    scheme,
                    n_groups,
                )  # fmt: skip
            )
        total = np.zeros((n_boot, n_groups, values.shape[1]))
        for part in ray.get(refs):
            total += part
        return total

    return group_sums
