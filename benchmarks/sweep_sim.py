"""Does the node-filling scheduler keep the GPUs busy? A seed-study-sized sweep, old order vs new.

Run from the repository root:

    python benchmarks/sweep_sim.py [--time-scale 0.001] [--skip-ray]

The sweep: 3 x 8B (tensor parallel 1), 1 x 14B (TP 2), 2 x 70B (TP 4); 11 tasks x 5,000 items x 21
samples, units of 256 items, generations of ~100 tokens (max 199), prompts of ~150 tokens.
Engine times come from `TimingModel.for_size` (H100-class assumptions stated there: load
20 s + 4 s per billion parameters, decode by size, TP and batch, a low-batch tail per unit).

Two parts, each for `sequential` (one model after another: the order before this scheduler) and
`fill` (the new default), on 1 node of 8 GPUs and 2 nodes of 8:

1. SIMULATED, full size: the scheduling policy itself (`engine.generate.scheduler.choose_starts`,
   the function the driver calls) on simulated time (`simulate_sweep`), 220 units per model.
   Two replica settings: each model's `replicas` fill the cluster (GPUs / TP: the old order's
   best case), and `replicas = 2` (a spec written without the node in mind).
2. MEASURED, scaled down: the real driver (`run_sweep`: Ray actors, placement groups, shards,
   done-records) with the fake engine sleeping per its timing model, on Ray with logical GPUs
   (`ray.init(num_gpus=8)`; 2 nodes via `ray.cluster_utils.Cluster`). Each model has 88 units
   of 4 items (11 tasks x 32 items, 21 samples); each stands for 2.5 real units
   (`fake_work_scale`), and modelled seconds are slept x --time-scale. Busy share and idle time
   come from the run's own timeline (actor start, engine ready, each unit's start and end, actor
   freed: `summary.json` -> `schedule`), reported in real-equivalent GPU-hours (/ time scale).
   Not scaled: Ray's worker start-up (seconds per actor here; it shows as `loading`) and the
   driver's round trip per unit (`between units`), so the measured shares are below the
   simulated ones, the sequential order's most.

Idle causes: `loading` (GPUs held by an engine starting), `tails` (held by an actor with nothing
left, or free after the last unit was handed out), `packing` (free while units were queued: the
policy left them empty), `between units` (hand-over between an actor's units).
Target: the new scheduler's GPU-busy share >= 95 % of the makespan. The load average is printed.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# The repository root on the path (the packages), not this folder (a script named like a package
# here would shadow it).
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

from engine.generate.scheduler import SimModel, TimingModel, simulate_sweep  # noqa: E402

MODELS = [
    ("8b-a", 8, 1),
    ("8b-b", 8, 1),
    ("8b-c", 8, 1),
    ("14b", 14, 2),
    ("70b-a", 70, 4),
    ("70b-b", 70, 4),
]
TASKS, ITEMS, SAMPLES, CHUNK = 11, 5000, 21, 256
PROMPT_TOKENS, GEN_TOKENS, MAX_TOKENS = 150, 100, 199
# The measured run: units of 4 items, 32 items per task; each stands for 2.5 real units.
FAKE_CHUNK, FAKE_ITEMS = 4, 32
REAL_UNITS = TASKS * -(-ITEMS // CHUNK)  # 220 per model
FAKE_UNITS = TASKS * FAKE_ITEMS // FAKE_CHUNK  # 88 per model
WORK_SCALE = REAL_UNITS * CHUNK / (FAKE_UNITS * FAKE_CHUNK)  # real items per fake item: 160


def _timing(billions: float, tp: int) -> TimingModel:
    return TimingModel.for_size(billions, tp, max_tokens=MAX_TOKENS)


def simulated(nodes: list[int], replicas: str) -> dict[str, dict[str, Any]]:
    gpus = sum(nodes)
    models = []
    for name, billions, tp in MODELS:
        t = _timing(billions, tp)
        seqs = CHUNK * SAMPLES
        unit = t.unit_seconds(CHUNK * PROMPT_TOKENS, seqs * GEN_TOKENS, seqs)
        reps = gpus // tp if replicas == "fill" else 2
        models.append(SimModel(name, tp, reps, REAL_UNITS, unit, t.load_seconds))
    return {
        s: simulate_sweep(models, nodes, s, handover_seconds=0.05, close_seconds=5.0)
        for s in ("sequential", "fill")
    }


def _spec(tmp: Path, gpus: int, time_scale: float) -> Any:
    from engine.config.sweep import validate

    models = []
    for name, billions, tp in MODELS:
        t = _timing(billions, tp)
        models.append(
            {
                "name": name,
                "path": "builtin:tiny",
                "replicas": gpus // tp,
                "tensor_parallel_size": tp,
                "engine_args": {
                    "fake_load_seconds": t.load_seconds,
                    # The fake prompts have ~8 words, the real ones ~150 tokens.
                    "fake_prefill_tps": t.prefill_tps * 8 / PROMPT_TOKENS,
                    "fake_decode_tps": t.decode_tps,
                    "fake_batch_half": t.batch_half,
                    "fake_tail_seconds": t.tail_seconds,
                    "fake_work_scale": WORK_SCALE,
                    "fake_time_scale": time_scale,
                },
            }
        )
    tasks = [
        {
            "name": f"t{i:02d}",
            "source": "builtin:arithmetic",
            "splits": ["test"],
            "limit": FAKE_ITEMS,
        }
        for i in range(TASKS)
    ]
    raw = {
        "run": {"name": "sweep-sim", "chunk_size": FAKE_CHUNK, "device": "gpu"},
        "models": models,
        "tasks": tasks,
        "prompts": [{"id": "plain", "template": "Question: {question}\nAnswer:"}],
        "sampling": {"n": SAMPLES, "max_tokens": MAX_TOKENS, "logprobs": 1, "seed": 7},
    }
    return validate(raw)


def measured(nodes: int, time_scale: float, tmp: Path) -> dict[str, dict[str, Any]]:
    import ray

    from engine.generate.actors import fake_backend_factory
    from engine.generate.runner import run_sweep

    results = {}
    for schedule in ("sequential", "fill"):
        cluster = None
        # Logical GPUs; one logical CPU per actor (the engines sleep).
        if nodes == 1:
            ray.init(
                address="local",
                num_cpus=8,
                num_gpus=8,
                include_dashboard=False,
                log_to_driver=False,
            )
        else:
            from ray.cluster_utils import Cluster

            cluster = Cluster(
                initialize_head=True,
                head_node_args={"num_cpus": 8, "num_gpus": 8, "include_dashboard": False},
            )
            for _ in range(nodes - 1):
                cluster.add_node(num_cpus=8, num_gpus=8)
            ray.init(address=cluster.address, log_to_driver=False)
        try:
            spec = _spec(tmp, 8 * nodes, time_scale)
            out = tmp / f"run-{nodes}-{schedule}"
            started = time.perf_counter()
            summary = run_sweep(
                spec,
                str(out),
                backend_factory=fake_backend_factory,
                progress=False,
                schedule=schedule,
            )
            report = summary["schedule"]
            report["wall"] = time.perf_counter() - started
            assert summary["units_finished"] == summary["units_planned"] == FAKE_UNITS * len(MODELS)
            report["predicted"] = _replay(summary, nodes, schedule, time_scale)
            results[schedule] = report
        finally:
            ray.shutdown()
            if cluster is not None:
                cluster.shutdown()
    return results


def _replay(summary: dict[str, Any], nodes: int, schedule: str, time_scale: float) -> float:
    """The busy share the simulator predicts for this scaled run, given the actor start-up, the
    unit times and the hand-over this machine showed in it (checks the simulator against the
    measured timeline)."""
    startup, models, slot_units = [], [], 0.0
    for name, billions, tp in MODELS:
        t = _timing(billions, tp)
        m = summary["models"][name]
        for a in m["actors"].values():
            if "ready_at" in a:  # actor start -> engine loaded, minus the modelled load
                startup.append(a["ready_at"] - a["started_at"] - t.load_seconds * time_scale)
        slot_units += m["units"] * tp
    overhead = max(sum(startup) / len(startup), 0.0)
    r = summary["schedule"]
    handover = r["idle_slot_seconds"]["between_units"] / max(slot_units, 1.0)
    for name, billions, tp in MODELS:
        m = summary["models"][name]
        unit = m["generate_seconds"] / max(m["units"], 1)
        load = _timing(billions, tp).load_seconds * time_scale + overhead
        models.append(SimModel(name, tp, 8 * nodes // tp, FAKE_UNITS, unit, load))
    sim = simulate_sweep(models, [8] * nodes, schedule, handover_seconds=handover)
    return sim["busy_share"]


def _row(label: str, r: dict[str, Any], scale: float) -> str:
    hours = 1 / scale / 3600
    idle = r["idle_slot_seconds"]
    return (
        f"{label:<34}{r['makespan_seconds'] * hours:>10.2f}{100 * r['busy_share']:>8.1f} %"
        f"{idle['loading'] * hours:>10.1f}{idle['tails'] * hours:>8.1f}{idle['packing'] * hours:>9.1f}"
        f"{idle['between_units'] * hours:>9.1f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--time-scale", type=float, default=0.001, help="wall s per modelled s")
    parser.add_argument("--skip-ray", action="store_true", help="the simulated part only")
    parser.add_argument("--nodes", default="1,2", help="node counts of the measured part")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    head = (
        f"{'':<34}{'makespan':>10}{'busy':>10}{'idle GPU-h: loading':>20}{'tails':>8}{'packing':>9}"
        f"{'between':>9}\n{'':<34}{'h':>10}"
    )
    print("SIMULATED (policy on simulated time), full size:", head, sep="\n")
    for nodes in ([8], [8, 8]):
        for replicas in ("fill", "2"):
            runs = simulated(nodes, replicas)
            for schedule, r in runs.items():
                label = f"{len(nodes)} node, replicas={'GPUs/TP' if replicas == 'fill' else 2}, {schedule}"
                print(_row(label, r, 1.0))
    if not args.skip_ray:
        print(
            f"\nMEASURED (real Ray + fake engine, time x {args.time_scale:g}), real-equivalent:",
            head,
            sep="\n",
        )
        with tempfile.TemporaryDirectory() as tmp:
            for nodes in [int(n) for n in args.nodes.split(",")]:
                runs = measured(nodes, args.time_scale, Path(tmp))
                for schedule, r in runs.items():
                    label = f"{nodes} node, replicas=GPUs/TP, {schedule}"
                    print(
                        _row(label, r, args.time_scale)
                        + f"   ({r['wall']:.0f} s wall; simulated with this run's start-up and"
                        f" hand-over: {100 * r['predicted']:.1f} %)"
                    )
    print(
        f"\nload average: {' '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} cores"
    )
    print(
        "command: python "
        + " ".join(shlex.quote(a) for a in ["benchmarks/sweep_sim.py", *sys.argv[1:]])
    )


if __name__ == "__main__":
    main()
