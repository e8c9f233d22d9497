"""GPU-only checks (run by scripts/gpu_check.sh on a node with the `gpu` extra)."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.engine_helpers import make_raw_spec

pytestmark = [pytest.mark.gpu, pytest.mark.slow]


def _cuda_devices() -> int:
    try:
        import torch
    except ImportError:
        return 0
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


@pytest.mark.skipif(_cuda_devices() == 0, reason="needs a CUDA GPU")
def test_one_actor_per_gpu_writes_exact_rows(tmp_path: Path) -> None:
    import polars as pl
    import ray

    from engine.config.sweep import validate
    from engine.generate.runner import run_sweep

    gpus = _cuda_devices()
    spec = validate(
        make_raw_spec(
            run={"name": "gpu", "chunk_size": 8, "device": "gpu"},
            sampling={"n": 4, "max_tokens": 16, "logprobs": 5, "seed": 3},
        )
    )
    try:
        summary = run_sweep(spec, str(tmp_path / "out"), actors=gpus, progress=False)
    finally:
        ray.shutdown()
    actors = summary["models"]["tiny"]["actors"]
    assert len({g for a in actors.values() for g in a["gpu_ids"]}) == len(actors)
    df = pl.scan_ipc(str(tmp_path / "out" / "shards" / "*.arrow")).collect()
    assert df.height == 60 * 4 == df.select("item_id", "sample_idx").n_unique()
