"""`sampling.seed_mode`: which samples carry seeds, and exactly-once resume in every mode.

The fake backend draws a seeded sample from its seed and an unseeded one from fresh entropy, the
way vLLM does, so these tests check the bookkeeping (unit ids, shards, done-records) per mode;
tests/engine/generate/test_vllm_engine.py checks the tokens on the real engine.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from helpers.engine_helpers import make_raw_spec

from engine.config.sweep import SEED_MODES, validate
from engine.errors import UserError
from engine.generate.actors import fake_backend_factory
from engine.generate.runner import run_sweep
from engine.generate.units import plan_units, row_seeds

KEYS = ["unit_id", "item_id", "sample_idx"]


def _spec(tmp_path: Path, mode: str | None) -> Any:
    sampling = {"n": 3, "max_tokens": 8, "logprobs": 2, "seed": 5}
    if mode is not None:
        sampling["seed_mode"] = mode
    return validate(
        make_raw_spec(
            run={"name": "modes", "chunk_size": 16},
            sampling=sampling,
            models=[
                {
                    "name": "fake",
                    "path": "builtin:tiny",
                    "engine_args": {"fake_log": str(tmp_path / "units.log")},
                }
            ],
        )
    )


def test_default_mode_keeps_the_ids_of_runs_made_before_seed_modes(tmp_path: Path) -> None:
    implicit, explicit = _spec(tmp_path, None), _spec(tmp_path, "per-sample")
    assert implicit.hash == explicit.hash
    assert "seed_mode" not in plan_units(explicit)[0].sampling
    other = _spec(tmp_path, "per-request")
    assert other.hash != implicit.hash  # another mode is another run (resume refuses a switch)
    assert plan_units(other)[0].unit_id != plan_units(implicit)[0].unit_id


def test_unknown_mode_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="sampling.seed_mode.*per-sample"):
        _spec(tmp_path, "per-batch")


@pytest.mark.parametrize(
    ("mode", "seeded"),
    [
        ("per-sample", [True, True, True]),
        ("per-request", [True, False, False]),
        ("none", [False] * 3),
    ],
)
def test_row_seeds_follow_the_mode(tmp_path: Path, mode: str, seeded: list[bool]) -> None:
    unit = plan_units(_spec(tmp_path, mode))[0]
    seeds = row_seeds(unit)
    assert len(seeds) == unit.n_rows
    assert [s is not None for s in seeds[:3]] == seeded
    if seeded[0]:
        assert seeds[0] == unit.seeds[0]  # sample 0 has the item's seed in both seeded modes


@pytest.mark.slow
@pytest.mark.parametrize("mode", list(SEED_MODES))
def test_partial_run_resumes_exactly_once(ray_local: Any, tmp_path: Path, mode: str) -> None:
    spec = _spec(tmp_path, mode)
    out = tmp_path / "out"
    first = run_sweep(spec, str(out), backend_factory=fake_backend_factory, progress=False)
    planned = first["units_planned"]
    assert first["settings"]["seed_mode"] == mode
    records = sorted((out / "done").iterdir())
    records[0].unlink()  # killed between shard and done-record
    torn = out / "shards" / json.loads(records[1].read_text())["shard"]
    torn.write_bytes(torn.read_bytes()[:100])  # killed mid-write
    (tmp_path / "units.log").unlink()
    again = run_sweep(spec, str(out), backend_factory=fake_backend_factory, progress=False)
    assert again["units_finished"] == planned
    assert len((tmp_path / "units.log").read_text().splitlines()) == 2  # only the two redone
    df = pl.scan_ipc(str(out / "shards" / "*.arrow")).collect()
    units = plan_units(spec)
    assert df.height == sum(u.n_rows for u in units)
    assert df.select(KEYS).n_unique() == df.height  # one row per (unit, item, sample)
    seeded = df.filter(pl.col("seed").is_not_null())
    expected = {"per-sample": df.height, "per-request": df.height // 3, "none": 0}[mode]
    assert seeded.height == expected
