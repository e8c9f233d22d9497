"""The node-filling scheduler: the pure policy and its simulator, then real Ray (4 logical GPUs,
fake engine) with two models side by side, an actor SIGKILLed while both run, and an actor that
finds no resources."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from helpers.engine_helpers import make_raw_spec
from helpers.reliability_helpers import assert_exactly_once, kill_actor_at_unit

from engine.config.sweep import validate
from engine.generate.actors import fake_backend_factory
from engine.generate.runner import RunIncomplete, run_sweep
from engine.generate.scheduler import Demand, SimModel, choose_starts, simulate_sweep
from engine.generate.verify import verify_run

GPU = {"GPU": 1.0, "CPU": 1.0}


def _demand(index: int, tp: int, cap: int, queued: int, **kw: Any) -> Demand:
    return Demand(index=index, need={"GPU": float(tp), "CPU": 1.0}, cap=cap, queued=queued, **kw)


def test_fill_serves_the_largest_tensor_parallel_size_first_and_packs_the_rest() -> None:
    free = {"n0": {"GPU": 8.0, "CPU": 8.0}}
    demands = [_demand(0, 1, 8, 100), _demand(1, 4, 1, 100), _demand(2, 2, 1, 100)]
    starts = choose_starts("fill", demands, free)
    assert [i for i, _ in starts] == [1, 2, 0, 0]  # TP4, TP2, then two TP1 in what is left
    sequential = choose_starts("sequential", demands, free)
    assert [i for i, _ in sequential] == [0] * 8  # the first model only, all its replicas


def test_fill_spreads_a_model_over_nodes_and_skips_a_replica_that_cannot_repay_its_load() -> None:
    free = {"a": {"GPU": 4.0, "CPU": 4.0}, "b": {"GPU": 4.0, "CPU": 4.0}}
    starts = choose_starts("fill", [_demand(0, 2, 2, 50)], free)
    assert sorted(node for _, node in starts) == ["a", "b"]
    # 3 units left, units of 10 s, loads of 60 s: the running actor finishes them first.
    late = _demand(0, 1, 4, 3, actors=1, per_node={"a": 1}, unit_seconds=10.0, load_seconds=60.0)
    assert choose_starts("fill", [late], free) == []


def test_simulated_fill_keeps_the_gpus_busy_where_the_old_order_leaves_them_idle() -> None:
    models = [
        SimModel("small", 1, 2, 40, unit_seconds=10.0, load_seconds=30.0),
        SimModel("mid", 2, 1, 20, unit_seconds=20.0, load_seconds=60.0),
        SimModel("big", 4, 1, 10, unit_seconds=40.0, load_seconds=120.0),
    ]
    old = simulate_sweep(models, [8], "sequential")
    new = simulate_sweep(models, [8], "fill")
    assert new["makespan_seconds"] < old["makespan_seconds"]
    assert new["busy_share"] > old["busy_share"]
    # Same work either way: busy GPU-seconds are the units' seconds times their GPUs.
    work = sum(m.units * m.unit_seconds * m.tensor_parallel_size for m in models)
    assert old["busy_slot_seconds"] == pytest.approx(work) == new["busy_slot_seconds"]
    idle = old["idle_slot_seconds"]
    total = old["busy_slot_seconds"] + sum(idle.values())
    assert total == pytest.approx(8 * old["makespan_seconds"])
    assert idle["packing"] > 0  # 2 replicas of a 1-GPU model leave 6 GPUs unused
    spans = old["models"]
    assert spans["mid"]["first_start"] >= spans["small"]["last_unit"]  # one model at a time


def _two_models(tmp_path: Path, seconds: float, replicas: int = 2) -> dict[str, Any]:
    log = str(tmp_path / "units.log")
    return make_raw_spec(
        run={"name": "two", "chunk_size": 8, "max_attempts": 3},
        models=[
            {
                "name": name,
                "path": "builtin:tiny",
                "replicas": replicas,
                "engine_args": {"fake_seconds": seconds, "fake_log": log},
            }
            for name in ("a", "b")
        ],
        tasks=[
            {"name": "arith", "source": "builtin:arithmetic"},
            {"name": "yesno", "source": "builtin:yesno", "splits": ["test"]},
        ],
    )


@pytest.mark.slow
def test_an_actor_killed_while_two_models_run_is_replaced_exactly_once(
    ray_local: Any, tmp_path: Path
) -> None:
    log = tmp_path / "units.log"
    # SIGKILL the actor running the 6th unit, in the middle of it.
    thread, victims = kill_actor_at_unit(log, 6, 0.1, 180)
    out = tmp_path / "out"
    summary = run_sweep(
        validate(_two_models(tmp_path, 0.3)),
        str(out),
        backend_factory=fake_backend_factory,
        progress=False,
    )
    thread.join()
    assert victims, "the killer never fired"
    unit_id = victims[0][0]
    models = summary["models"]
    # Both models ran at once: 2 + 2 actors on the 4 GPUs, each with its own GPU.
    spans = {
        m: [(a["started_at"], a["freed_at"]) for a in models[m]["actors"].values()]
        for m in ("a", "b")
    }
    assert min(e for _, e in spans["a"]) > min(s for s, _ in spans["b"])  # side by side
    assert sum(models[m]["actor_restarts"] for m in models) == 1
    retried = [r for m in models.values() for r in m["retries"] if r["unit_id"] == unit_id]
    assert retried and "actor died" in retried[0]["error"]
    assert summary["units_finished"] == summary["units_planned"] and not summary["failed_units"]
    ran = [line.split()[0] for line in log.read_text().splitlines()]
    assert ran.count(unit_id) == 2 and len(set(ran)) == summary["units_planned"]
    assert sum(m["units"] for m in models.values()) == summary["units_planned"]
    assert sum(m["rows"] for m in models.values()) == summary["rows"]
    schedule = summary["schedule"]
    assert schedule["schedule"] == "fill" and 0 < schedule["busy_share"] <= 1
    assert verify_run(str(out)).ok
    assert_exactly_once(out, 2 * 180 * 2)


@pytest.mark.slow
def test_the_sequential_order_runs_one_model_at_a_time(ray_local: Any, tmp_path: Path) -> None:
    out = tmp_path / "out"
    summary = run_sweep(
        validate(_two_models(tmp_path, 0.05)),
        str(out),
        backend_factory=fake_backend_factory,
        progress=False,
        schedule="sequential",
    )
    models = summary["models"]
    a_end = max(a["freed_at"] for a in models["a"]["actors"].values())
    b_start = min(a["started_at"] for a in models["b"]["actors"].values())
    assert b_start >= a_end  # b's actors started after a's were torn down
    assert summary["units_finished"] == summary["units_planned"]
    assert json.loads((out / "summary.json").read_text())["schedule"]["schedule"] == "sequential"


@pytest.mark.slow
def test_an_actor_that_finds_no_resources_fails_its_units_with_one_clear_error(
    ray_local: Any, tmp_path: Path
) -> None:
    hog = ray_local.remote(num_gpus=4, num_cpus=0)(type("Hog", (), {"ping": lambda self: 1}))
    holder = hog.remote()  # another job holds every GPU the scheduler thinks is free
    ray_local.get(holder.ping.remote())
    try:
        with pytest.raises(RunIncomplete, match="no resources: no node had 1 CPU \\+ 1 GPU free"):
            run_sweep(
                validate(_two_models(tmp_path, 0.0, replicas=1)),
                str(tmp_path / "out"),
                backend_factory=fake_backend_factory,
                progress=False,
                placement_timeout=3.0,
            )
    finally:
        ray_local.kill(holder)


def test_a_specs_units_become_simulated_models() -> None:
    from engine.generate.scheduler import TimingModel, sim_models
    from engine.generate.units import plan_units

    raw = make_raw_spec()
    raw["models"] = [
        {"name": "small", "path": "builtin:tiny", "replicas": 2},
        {"name": "api", "path": "builtin:tiny"},
        {"name": "big", "path": "builtin:tiny", "tensor_parallel_size": 4},
    ]
    spec = validate(raw)
    units = plan_units(spec)
    timing = {"small": TimingModel.for_size(8), "big": TimingModel.for_size(70, 4)}
    models = sim_models(spec, units, timing, node_gpus=8)
    assert [m.name for m in models] == ["small", "big"]  # untimed (API) models are left out
    assert [m.replicas for m in models] == [8, 2]
    assert models[0].units == sum(u.model.name == "small" for u in units)
    assert models[1].unit_seconds > models[0].unit_seconds  # a 70B unit takes longer
    assert simulate_sweep(models, [8])["busy_share"] > 0
