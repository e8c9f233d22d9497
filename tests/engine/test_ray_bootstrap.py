"""`engine.cluster`: the bootstrap's sums as Ray tasks over item shards equal the in-process sums."""

from __future__ import annotations

import os

import pytest
from helpers import EXAMPLE
from helpers.approx import diff

from metrics import analyze


@pytest.mark.slow
def test_ray_shards_equal_local(tmp_path):
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray

    from engine.cluster import ray_group_sums
    from metrics.bootstrap import weighted_group_sums

    local = analyze(EXAMPLE, bootstrap=48, seed=4).metrics_json["models"]
    was_running = ray.is_initialized()  # another test's Ray session: leave it up
    try:
        sharded = analyze(
            EXAMPLE,
            bootstrap=48,
            seed=4,
            group_sums=ray_group_sums(weighted_group_sums, None, n_shards=3),
        )
    finally:
        if not was_running:
            ray.shutdown()
    assert diff(local, sharded.metrics_json["models"], rel=1e-12) == []
