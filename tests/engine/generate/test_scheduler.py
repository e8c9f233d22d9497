"""The driver on a local Ray with 4 logical GPUs and the fake engine: placement, pull, retries."""

from __future__ import annotations

import collections
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from helpers.engine_helpers import assert_actors_exited_themselves, generation_actors, make_raw_spec

from engine.config.sweep import validate
from engine.contract import GENERATIONS
from engine.errors import UserError
from engine.generate.actors import fake_backend_factory
from engine.generate.runner import run_sweep

pytestmark = pytest.mark.slow


def _spec(tmp_path: Path, replicas: int, tp: int = 1, **engine_args: Any) -> Any:
    args = {"fake_seconds": 0.05, "fake_log": str(tmp_path / "units.log"), **engine_args}
    return validate(
        make_raw_spec(
            run={"name": "fake", "chunk_size": 8},
            models=[
                {
                    "name": "fake",
                    "path": "builtin:tiny",
                    "replicas": replicas,
                    "tensor_parallel_size": tp,
                    "engine_args": args,
                }
            ],
            tasks=[
                {"name": "arith", "source": "builtin:arithmetic"},
                {"name": "yesno", "source": "builtin:yesno", "splits": ["test"]},
            ],
        )
    )


def _rows(out: Path) -> pl.DataFrame:
    return pl.scan_ipc(str(out / "shards" / "*.arrow")).collect()


def _check_exact(out: Path, spec: Any) -> pl.DataFrame:
    df = _rows(out)
    items = 120 + 60
    assert df.height == items * spec.sampling.n
    keys = df.select("task", "split", "item_id", "sample_idx")
    assert keys.n_unique() == df.height
    return df


def test_actors_get_distinct_gpus_and_no_unit_runs_twice(ray_local: Any, tmp_path: Path) -> None:
    spec = _spec(tmp_path, replicas=4)
    before = generation_actors(ray_local)
    summary = run_sweep(
        spec, str(tmp_path / "out"), backend_factory=fake_backend_factory, progress=False
    )
    assert_actors_exited_themselves(ray_local, before, 4)
    actors = summary["models"]["fake"]["actors"]
    gpu_sets = [tuple(a["gpu_ids"]) for a in actors.values()]
    assert len(gpu_sets) == 4 and all(len(g) == 1 for g in gpu_sets)
    assert len({g[0] for g in gpu_sets}) == 4
    assert all(a["units"] >= 1 for a in actors.values())  # idle actors pulled work
    assert all("gpu_seconds" in a for a in actors.values())
    runs = collections.Counter(
        line.split()[0] for line in (tmp_path / "units.log").read_text().splitlines()
    )
    assert len(runs) == summary["units_planned"] and set(runs.values()) == {1}
    df = _check_exact(tmp_path / "out", spec)
    assert (
        pl.scan_ipc(str(tmp_path / "out" / "shards" / "*.arrow")).collect_schema().names()
        == GENERATIONS.names
    )
    assert df.schema["top_logprobs"] == pl.List(
        pl.List(pl.Struct({"token_id": pl.Int32, "logprob": pl.Float32}))
    )


def test_tensor_parallel_actors_get_their_gpu_count(ray_local: Any, tmp_path: Path) -> None:
    spec = _spec(tmp_path, replicas=2, tp=2)
    summary = run_sweep(
        spec, str(tmp_path / "out"), backend_factory=fake_backend_factory, progress=False
    )
    gpu_sets = [a["gpu_ids"] for a in summary["models"]["fake"]["actors"].values()]
    assert [len(g) for g in gpu_sets] == [2, 2]
    assert len({g for s in gpu_sets for g in s}) == 4
    _check_exact(tmp_path / "out", spec)


def test_too_many_gpus_is_a_user_error(ray_local: Any, tmp_path: Path) -> None:
    spec = _spec(tmp_path, replicas=3, tp=2)
    with pytest.raises(UserError, match="models.0"):
        run_sweep(spec, str(tmp_path / "out"), backend_factory=fake_backend_factory, progress=False)


def test_dead_actor_is_restarted_and_its_unit_retried(ray_local: Any, tmp_path: Path) -> None:
    spec = _spec(tmp_path, replicas=2, fake_crash_once=str(tmp_path / "crashed"))
    summary = run_sweep(
        spec, str(tmp_path / "out"), backend_factory=fake_backend_factory, progress=False
    )
    assert (tmp_path / "crashed").exists()
    assert summary["models"]["fake"]["actor_restarts"] == 1
    assert summary["units_finished"] == summary["units_planned"]
    _check_exact(tmp_path / "out", spec)


def test_resume_redoes_only_missing_or_corrupt_units(ray_local: Any, tmp_path: Path) -> None:
    spec = _spec(tmp_path, replicas=2)
    out = tmp_path / "out"
    run_sweep(spec, str(out), backend_factory=fake_backend_factory, progress=False)
    before = _rows(out).sort("task", "split", "item_id", "sample_idx")
    records = sorted((out / "done").iterdir())
    records[0].unlink()  # as if killed between shard and done-record
    corrupt = out / "shards" / __import__("json").loads(records[1].read_text())["shard"]
    corrupt.write_bytes(corrupt.read_bytes()[:100])  # a torn shard
    (tmp_path / "units.log").unlink()
    summary = run_sweep(
        spec, str(out), backend_factory=fake_backend_factory, actors=1, progress=False
    )
    assert summary["models"]["fake"]["units"] == 2
    assert len((tmp_path / "units.log").read_text().splitlines()) == 2
    after = _check_exact(out, spec).sort("task", "split", "item_id", "sample_idx")
    assert after.select("token_ids", "seed").equals(before.select("token_ids", "seed"))


def test_overlong_prompts_go_to_the_error_ledger(ray_local: Any, tmp_path: Path) -> None:
    spec = _spec(tmp_path, replicas=1, fake_max_prompt_chars=40)
    summary = run_sweep(
        spec, str(tmp_path / "out"), backend_factory=fake_backend_factory, progress=False
    )
    df = _check_exact(tmp_path / "out", spec)
    errors = df.filter(pl.col("error").is_not_null())
    assert errors.height == summary["models"]["fake"]["error_rows"] > 0
    assert errors["text"].null_count() == errors.height
    assert (errors["prompt_text"].str.len_chars() > 40).all()
    assert summary["units_finished"] == summary["units_planned"]


def test_changed_spec_is_refused_by_run(ray_local: Any, tmp_path: Path) -> None:
    spec = _spec(tmp_path, replicas=1)
    run_sweep(spec, str(tmp_path / "out"), backend_factory=fake_backend_factory, progress=False)
    raw = make_raw_spec()
    raw["sampling"]["temperature"] = 0.5
    with pytest.raises(UserError, match="sampling.temperature"):
        run_sweep(
            validate(raw),
            str(tmp_path / "out"),
            backend_factory=fake_backend_factory,
            progress=False,
        )


def test_the_python_api_returns_a_frozen_sweep_result(ray_local: Any, tmp_path: Path) -> None:
    import dataclasses

    import engine

    spec = _spec(tmp_path, replicas=1)
    out = tmp_path / "out"
    result = engine.run_sweep(spec, out, backend_factory=fake_backend_factory, progress=False)
    assert isinstance(result, engine.SweepResult)
    assert result.units_finished == result.units_planned == len(engine.plan(spec)["units"])
    assert result.rows == _check_exact(out, spec).height
    assert result.out_dir == out and result.models["fake"]["units"] == result.units_finished
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.rows = 0  # type: ignore[misc]


def test_only_runs_a_part_of_the_plan_and_keeps_the_rest(ray_local: Any, tmp_path: Path) -> None:
    """`only` (a study's wave): the manifest lists those units as the plan; finished units outside
    them are kept, and a later call with more units runs only the new ones."""
    import json

    from engine.generate.units import plan_units

    spec = _spec(tmp_path, replicas=1)
    out = tmp_path / "out"
    ids = [u.unit_id for u in plan_units(spec)]
    summary = run_sweep(
        spec, str(out), backend_factory=fake_backend_factory, progress=False, only=ids[:3]
    )
    manifest = json.loads((out / "manifest.json").read_text())
    assert [u["unit_id"] for u in manifest["units"]] == ids[:3]
    assert manifest["units_planned"] == 3 and summary["units_finished"] == 3
    run_sweep(spec, str(out), backend_factory=fake_backend_factory, progress=False, only=ids[1:2])
    assert len(list((out / "shards").iterdir())) == 3  # units 0 and 2 are kept, not garbage
    run_sweep(spec, str(out), backend_factory=fake_backend_factory, progress=False)
    logged = [line.split()[0] for line in (tmp_path / "units.log").read_text().splitlines()]
    assert sorted(logged) == sorted(ids)  # each unit generated once over the three calls
    _check_exact(out, spec)
