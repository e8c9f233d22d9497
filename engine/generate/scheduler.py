"""Which model gets which GPUs when: the packing policy of `mic run`, and a simulator of it.

The driver (`engine.generate.runner.SweepScheduler`) and the discrete-event simulator here
(`simulate_sweep`) ask the same pure function, `choose_starts`, which actors to start on which
node, so a simulated makespan is the policy's, not a model of it. Neither imports Ray.

Two schedules:

- ``"fill"`` (the default): models run side by side. Models are served largest tensor-parallel
  size first (freed blocks of 4 GPUs go to the next 4-GPU model; 1-GPU models fill what is left at
  the end, so the node does not fragment), each up to its `replicas`, on the node where it has the
  fewest actors (a lost node takes fewer along), then the tightest fit; GPUs no model wants within
  its `replicas` go to models with work left as extra replicas. An actor retires as soon as
  its model has nothing left to hand out, and its GPUs go to a model still running (one more
  replica) or to the next, whose engine loads while the previous model's last units finish. A new
  replica is started only when the model's queue is long enough to repay its load time.
- ``"sequential"``: the order before this scheduler: model after model, all replicas at once,
  torn down together when the model's last unit is done (kept for comparison: `sweep_sim`).

`schedule_report` turns an actor/unit timeline (real or simulated) into the busy share of the
slots (GPUs, or CPUs on a CPU-only cluster) and the idle slot-seconds by cause.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

SCHEDULES = ("fill", "sequential")


@dataclass
class Demand:
    """What the policy sees of one model at one moment.

    Attributes:
        index: Position in the spec (ties and the sequential order).
        need: Resources per actor, e.g. {"GPU": 2, "CPU": 1}.
        cap: Most actors at once (`replicas`, or `--actors`, at most the model's unit count).
        queued: Units not handed out yet.
        actors: Live actors (loading, working or idle, not retiring).
        per_node: Live actors by node.
        busy: Units handed out and not finished.
        unit_seconds: Mean seconds per unit seen so far (None: none finished yet).
        load_seconds: Seconds an actor of this model took to load (None: none loaded yet).
        closing: Retired actors still freeing their engines.
        elastic: May run more than `cap` actors on resources no model wants within its cap
            (GPU runs without `--actors`: a GPU nothing else wants is better used by one more
            replica than left idle).
    """

    index: int
    need: dict[str, float]
    cap: int
    queued: int
    actors: int = 0
    per_node: dict[str, int] = field(default_factory=dict)
    busy: int = 0
    unit_seconds: float | None = None
    load_seconds: float | None = None
    closing: int = 0
    elastic: bool = False

    @property
    def finished(self) -> bool:
        """Nothing queued, nothing running, no actor left (closing ones included)."""
        return self.queued == 0 and self.busy == 0 and self.actors == 0 and self.closing == 0


def slots(need: Mapping[str, float]) -> float:
    """The packed resource of an actor: its GPUs, or its CPUs when it has none."""
    return float(need.get("GPU", 0.0)) or float(need.get("CPU", 0.0))


def worth_starting(d: Demand, extra: int) -> bool:
    """Whether one more actor (beyond `extra` already chosen this round) repays its load time.

    The existing actors keep working while the newcomer loads; the newcomer's share of what is
    left after that must take at least as long as its load. Before any timing is known, a new
    actor is worth it while every actor still gets a unit.
    """
    n = d.actors + extra
    if n == 0:
        return d.queued > 0
    if not d.unit_seconds or d.load_seconds is None:
        return d.queued > n
    per_load = d.load_seconds / d.unit_seconds  # units one actor finishes during a load
    return d.queued >= (2 * n + 1) * per_load and d.queued > n


def choose_starts(
    schedule: str, demands: Sequence[Demand], free: Mapping[str, Mapping[str, float]]
) -> list[tuple[int, str]]:
    """Decide which actors to start now, and where.

    Args:
        schedule: "fill" or "sequential".
        demands: Every model of the sweep (finished ones included), in spec order.
        free: Free resources by node.

    Returns:
        (demand index in `demands`, node) per actor to start, in start order.
    """
    room = {node: dict(res) for node, res in free.items()}
    per_node = {i: dict(d.per_node) for i, d in enumerate(demands)}
    starts: list[tuple[int, str]] = []
    if schedule == "sequential":
        current = next((i for i, d in enumerate(demands) if not d.finished), None)
        if current is None:
            return starts
        d = demands[current]
        added = 0
        while d.queued > added and d.actors + added < d.cap:
            node = _pick_node(d.need, per_node[current], room)
            if node is None:
                break
            starts.append((current, node))
            added += 1
        return starts
    order = sorted(range(len(demands)), key=lambda i: (-slots(demands[i].need), demands[i].index))
    added = dict.fromkeys(order, 0)
    # First every model up to its replicas, then what is left to elastic models beyond them.
    for beyond in (False, True):
        for i in order:
            d = demands[i]
            if beyond and not d.elastic:
                continue
            while (
                d.queued > 0
                and (beyond or d.actors + added[i] < d.cap)
                and worth_starting(d, added[i])
            ):
                node = _pick_node(d.need, per_node[i], room)
                if node is None:
                    break
                starts.append((i, node))
                added[i] += 1
    return starts


def _pick_node(
    need: Mapping[str, float], mine: dict[str, int], room: dict[str, dict[str, float]]
) -> str | None:
    fits = [
        n for n, res in room.items() if all(res.get(k, 0.0) >= v - 1e-9 for k, v in need.items())
    ]
    if not fits:
        return None
    key = slots(need)
    kind = "GPU" if need.get("GPU") else "CPU"
    node = min(fits, key=lambda n: (mine.get(n, 0), room[n].get(kind, 0.0) - key, n))
    for k, v in need.items():
        room[node][k] = room[node].get(k, 0.0) - v
    mine[node] = mine.get(node, 0) + 1
    return node


# ---- the timeline's accounting -------------------------------------------------------------------


@dataclass
class ActorSpan:
    """One actor's life on the timeline (seconds on one clock).

    Attributes:
        model: Its model.
        slots: GPUs (or CPUs) it holds.
        born: Resources taken (actor started).
        ready: Engine loaded (None: never got there).
        freed: Resources given back (retired, or died).
        units: (start, end) of each unit it generated.
    """

    model: str
    slots: float
    born: float
    ready: float | None = None
    freed: float | None = None
    units: list[tuple[float, float]] = field(default_factory=list)


def schedule_report(
    schedule: str,
    total_slots: float,
    start: float,
    end: float,
    spans: Sequence[ActorSpan],
    unallocated_waiting: float,
    resource: str = "GPU",
) -> dict[str, Any]:
    """The busy share of the slots over a run and where the rest went.

    Args:
        schedule: The policy that ran.
        total_slots: GPUs (or CPUs) of the cluster.
        start: When the scheduler started.
        end: When the last actor was freed.
        spans: Every actor's life.
        unallocated_waiting: Slot-seconds no actor held while some unit was still queued
            (integrated by the caller: the policy left them empty, `packing`).
        resource: "GPU" or "CPU".

    Returns:
        makespan, busy share and idle slot-seconds by cause: `loading` (engine start-up),
        `between_units` (hand-over between units), `tails` (held by an actor with nothing left, or
        free after the last unit was handed out), `packing` (free while work was queued).
    """
    makespan = max(end - start, 1e-9)
    capacity = total_slots * makespan
    busy = loading = between = held_tail = held = 0.0
    for s in spans:
        freed = s.freed if s.freed is not None else end
        held += (freed - s.born) * s.slots
        ready = s.ready if s.ready is not None else freed
        loading += (min(ready, freed) - s.born) * s.slots
        work = sum(b - a for a, b in s.units)
        busy += work * s.slots
        if s.ready is not None:
            last = max((b for _, b in s.units), default=ready)
            held_tail += max(freed - last, 0.0) * s.slots
            between += max(last - ready - work, 0.0) * s.slots
    unallocated = max(capacity - held, 0.0)
    packing = min(unallocated_waiting, unallocated)
    return {
        "schedule": schedule,
        "resource": resource,
        "slots": total_slots,
        "makespan_seconds": makespan,
        "busy_slot_seconds": busy,
        "busy_share": busy / capacity if capacity else 0.0,
        "idle_slot_seconds": {
            "loading": loading,
            "between_units": between,
            "tails": held_tail + (unallocated - packing),
            "packing": packing,
        },
    }


# ---- the simulator -------------------------------------------------------------------------------


@dataclass(frozen=True)
class SimModel:
    """A model of a simulated sweep.

    Attributes:
        name: Model name.
        tensor_parallel_size: GPUs per actor.
        replicas: Most actors at once.
        units: Work units of the model.
        unit_seconds: Seconds one actor takes per unit (e.g. `TimingModel.unit_seconds`).
        load_seconds: Seconds from start to a loaded engine.
    """

    name: str
    tensor_parallel_size: int
    replicas: int
    units: int
    unit_seconds: float
    load_seconds: float


def simulate_sweep(
    models: Sequence[SimModel],
    node_gpus: Sequence[int],
    schedule: str = "fill",
    *,
    handover_seconds: float = 0.0,
    close_seconds: float = 0.0,
    elastic: bool = True,
) -> dict[str, Any]:
    """Run the scheduling policy on simulated time (no Ray, no engines).

    Args:
        models: The sweep's models, in spec order.
        node_gpus: GPUs per node (e.g. [8] for one 8-GPU node, [8, 8] for two).
        schedule: "fill" or "sequential".
        handover_seconds: Driver round trip between two units of an actor.
        close_seconds: Seconds an actor takes to free its engine once retired.
        elastic: Models may get more actors than `replicas` on GPUs nothing else wants (as
            `mic run` on GPUs without `--actors`).

    Returns:
        The `schedule_report` of the simulated run (makespan, busy share, idle by cause), plus
        `models`: per model the first start and the last unit's end (seconds).
    """
    free = {f"node{i}": {"GPU": float(g), "CPU": float(g)} for i, g in enumerate(node_gpus)}
    demands = [
        Demand(
            index=i,
            need={"GPU": float(m.tensor_parallel_size), "CPU": 1.0},
            cap=min(m.replicas, m.units),
            queued=m.units,
            elastic=elastic,
        )
        for i, m in enumerate(models)
    ]
    spans: list[ActorSpan] = []
    actor_node: list[str] = []
    actor_model: list[int] = []
    idle_actors: list[set[int]] = [set() for _ in models]
    retiring: set[int] = set()
    events: list[tuple[float, int, str, int]] = []  # (time, seq, kind, actor)
    seq = 0
    now = waiting = 0.0
    first: dict[str, float] = {}
    last: dict[str, float] = {}

    def push(t: float, kind: str, actor: int) -> None:
        nonlocal seq
        heapq.heappush(events, (t, seq, kind, actor))
        seq += 1

    def start_actors() -> None:
        for i, node in choose_starts(schedule, demands, free):
            m, d = models[i], demands[i]
            for k, v in d.need.items():
                free[node][k] -= v
            d.actors += 1
            d.per_node[node] = d.per_node.get(node, 0) + 1
            spans.append(ActorSpan(m.name, float(m.tensor_parallel_size), now))
            actor_node.append(node)
            actor_model.append(i)
            first.setdefault(m.name, now)
            push(now + m.load_seconds, "ready", len(spans) - 1)

    def hand_out(a: int) -> None:
        i = actor_model[a]
        d = demands[i]
        if d.queued:
            d.queued -= 1
            d.busy += 1
            begin = now + (handover_seconds if spans[a].units else 0.0)
            spans[a].units.append((begin, begin + models[i].unit_seconds))
            push(begin + models[i].unit_seconds, "unit", a)
        else:
            idle_actors[i].add(a)

    def retire(a: int) -> None:
        i = actor_model[a]
        retiring.add(a)
        idle_actors[i].discard(a)
        demands[i].actors -= 1
        demands[i].closing += 1
        demands[i].per_node[actor_node[a]] -= 1
        push(now + close_seconds, "freed", a)

    start_actors()
    while events:
        t, _, kind, a = heapq.heappop(events)
        if any(d.queued for d in demands):
            waiting += sum(res["GPU"] for res in free.values()) * (t - now)
        now = t
        i = actor_model[a]
        d = demands[i]
        if kind == "ready":
            spans[a].ready = now
            d.load_seconds = models[i].load_seconds
            hand_out(a)
        elif kind == "unit":
            d.busy -= 1
            d.unit_seconds = models[i].unit_seconds
            last[models[i].name] = now
            hand_out(a)
        else:  # freed
            spans[a].freed = now
            d.closing -= 1
            for k, v in d.need.items():
                free[actor_node[a]][k] += v
        if schedule == "fill":
            for j, dj in enumerate(demands):
                if not dj.queued:
                    for b in sorted(idle_actors[j]):
                        retire(b)
        else:
            for j, dj in enumerate(demands):
                if not dj.queued and not dj.busy and idle_actors[j]:
                    loading = dj.actors - len(idle_actors[j])
                    if loading == 0:
                        for b in sorted(idle_actors[j]):
                            retire(b)
        start_actors()
    if any(d.queued for d in demands):
        stuck = [models[i].name for i, d in enumerate(demands) if d.queued]
        raise ValueError(f"models {stuck} never fit on nodes of {list(node_gpus)} GPUs")
    report = schedule_report(schedule, float(sum(node_gpus)), 0.0, now, spans, waiting)
    report["models"] = {
        m.name: {"first_start": first[m.name], "last_unit": last[m.name]} for m in models
    }
    return report


# ---- the timing of a generation engine -----------------------------------------------------------


@dataclass(frozen=True)
class TimingModel:
    """Seconds a vLLM-like engine takes: load, then prefill and batched decode, then a tail.

    Decode throughput grows with the number of sequences decoded together and saturates:
    ``decode_tps * batch / (batch + batch_half)``. Each unit ends with a tail at low batch (the
    last, longest samples), `tail_seconds`.

    Attributes:
        load_seconds: Start-up: weights to the GPUs, CUDA graphs, KV cache.
        prefill_tps: Prompt tokens per second of one replica.
        decode_tps: Generated tokens per second of one replica at a saturating batch.
        batch_half: Sequences at which decode reaches half of `decode_tps`.
        tail_seconds: Per unit: the last samples decoding at low batch.
    """

    load_seconds: float
    prefill_tps: float
    decode_tps: float
    batch_half: float = 32.0
    tail_seconds: float = 0.0

    @classmethod
    def for_size(
        cls, billions: float, tensor_parallel_size: int = 1, max_tokens: int = 256
    ) -> TimingModel:
        """Rough figures of a bf16 dense model of `billions` parameters on H100-class GPUs.

        Assumptions (replace with `mic bench` numbers where you have them): decode at a saturating
        batch moves ~28,000 / billions tokens/s per GPU, tensor parallelism scales at 85 % per
        doubling, prefill is 8 x faster than decode, loading takes 20 s + 4 s per billion, and a
        unit's tail is half of `max_tokens` at the single-sequence speed (~1,000 / billions tok/s
        per GPU).
        """
        tp = max(tensor_parallel_size, 1)
        scale = tp * 0.85 ** math.log2(tp)
        decode = 28_000.0 / billions * scale
        single = 1_000.0 / billions * math.sqrt(tp)
        return cls(
            load_seconds=20.0 + 4.0 * billions,
            prefill_tps=8 * decode,
            decode_tps=decode,
            batch_half=32.0,
            tail_seconds=0.5 * max_tokens / single,
        )

    def unit_seconds(
        self, prompt_tokens: float, generated_tokens: float, sequences: float
    ) -> float:
        """Seconds of one unit: prefill + decode at the unit's batch + the tail."""
        rate = self.decode_tps * sequences / (sequences + self.batch_half) if sequences else 1.0
        return prompt_tokens / self.prefill_tps + generated_tokens / rate + self.tail_seconds


def sim_models(
    spec: Any,
    units: Sequence[Any],
    timing: Mapping[str, TimingModel],
    prompt_tokens: float = 150.0,
    generated_share: float = 0.5,
    node_gpus: int | None = None,
) -> list[SimModel]:
    """The `SimModel`s of a spec's planned units (for `simulate_sweep`, e.g. in `mic plan`).

    Args:
        spec: The validated `SweepSpec`.
        units: Its planned units (`engine.generate.units.plan_units`), or the ones left to run.
        timing: A `TimingModel` per model name (models without one are left out: API models).
        prompt_tokens: Assumed prompt tokens per item.
        generated_share: Assumed mean generation length as a share of `sampling.max_tokens`.
        node_gpus: If given, `replicas` of each model is raised to fill a node of this many GPUs
            (what the fill schedule does with GPUs no other model wants).

    Returns:
        One `SimModel` per timed model with units, in spec order.
    """
    n = int(spec.sampling.n)
    generated = generated_share * float(spec.sampling.max_tokens)
    out = []
    for model in spec.models:
        t = timing.get(model.name)
        mine = [u for u in units if u.model.name == model.name]
        if t is None or not mine:
            continue
        seconds = [
            t.unit_seconds(
                len(u.item_ids) * prompt_tokens,
                len(u.item_ids) * n * generated,
                len(u.item_ids) * n,
            )
            for u in mine
        ]
        tp = model.tensor_parallel_size
        replicas = max(model.replicas, node_gpus // tp) if node_gpus else model.replicas
        out.append(
            SimModel(
                model.name, tp, replicas, len(mine), sum(seconds) / len(seconds), t.load_seconds
            )
        )
    return out
