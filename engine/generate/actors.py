"""The generation actor: one per model replica, owning one backend (a `vllm.LLM`).

The actor generates on its main thread and hands each finished unit to a writer thread that
decodes the texts, builds the Arrow table and commits the shard + done-record. So shard writing
overlaps the next unit's generation instead of stalling it. `run_unit` returns the units the
writer committed since the last call; `drain` waits for the writer and returns the rest.
"""

from __future__ import annotations

import os
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from engine.config.sweep import ModelSpec
from engine.errors import UserError
from engine.generate.backends.base import Backend
from engine.generate.backends.fake import FakeBackend
from engine.generate.backends.vllm import VLLMBackend
from engine.generate.scheduler import TimingModel
from engine.generate.store import RunStore, is_storage_error
from engine.generate.units import WorkUnit

BackendFactory = Callable[[ModelSpec, int], Backend]


def vllm_backend_factory(model: ModelSpec, max_logprobs: int) -> Backend:
    """Build the default backend: the model's `vllm.LLM` (resolving `builtin:` names)."""
    from engine.generate.tiny_model import resolve_model

    args = dict(model.engine_args)
    if model.tensor_parallel_size > 1:
        # The actor runs in a placement group (the scheduler's reservation of its GPUs); vLLM
        # would take that as a request for its Ray executor and look for one bundle per GPU.
        # Its own processes on the actor's GPUs, as before placement groups, unless asked.
        args.setdefault("distributed_executor_backend", "mp")
    return VLLMBackend(
        resolve_model(model.path),
        args,
        tensor_parallel_size=model.tensor_parallel_size,
        max_logprobs=max_logprobs,
        chat=model.use_chat_template,
        chat_template_kwargs=model.chat_template_kwargs,
    )


def openai_backend_factory(model: ModelSpec, max_logprobs: int) -> Backend:
    """Build the backend of an API model (`backend = "openai"`): an OpenAI-compatible server."""
    from engine.generate.backends.openai import OpenAIBackend

    return OpenAIBackend(model, max_logprobs)


def default_backend_factory(model: ModelSpec, max_logprobs: int) -> Backend:
    """The backend the model's spec names: vLLM, or an OpenAI-compatible server."""
    factory = openai_backend_factory if model.is_api else vllm_backend_factory
    return factory(model, max_logprobs)


def fake_backend_factory(model: ModelSpec, max_logprobs: int) -> Backend:
    """Build a `FakeBackend` (tests, `benchmarks/sweep_sim.py`) from `engine_args` keys
    `fake_seconds`, `fake_log`, `fake_crash_once`, `fake_max_prompt_chars` and the timing model's
    `fake_load_seconds`, `fake_prefill_tps`, `fake_decode_tps`, `fake_batch_half`,
    `fake_tail_seconds`, `fake_work_scale`, `fake_time_scale` (see `FakeBackend`)."""
    args = model.engine_args
    timing = None
    if "fake_decode_tps" in args:
        timing = TimingModel(
            load_seconds=float(args.get("fake_load_seconds", 0.0)),
            prefill_tps=float(args.get("fake_prefill_tps", 8 * float(args["fake_decode_tps"]))),
            decode_tps=float(args["fake_decode_tps"]),
            batch_half=float(args.get("fake_batch_half", 32.0)),
            tail_seconds=float(args.get("fake_tail_seconds", 0.0)),
        )
    return FakeBackend(
        timing=timing,
        work_scale=float(args.get("fake_work_scale", 1.0)),
        time_scale=float(args.get("fake_time_scale", 1.0)),
        seconds_per_unit=float(args.get("fake_seconds", 0.0)),
        max_prompt_chars=int(args.get("fake_max_prompt_chars", 10_000)),
        log_path=args.get("fake_log"),
        crash_once_marker=args.get("fake_crash_once"),
    )


def quiet_sigterm() -> None:
    """From now on a SIGTERM ends this process at once with status 0 and prints nothing (for an
    actor whose work is done; see `GenerationActor.exit`). A no-op off the main thread, where
    Python cannot set signal handlers."""
    import signal

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: os._exit(0))


class GenerationActor:
    """Runs work units of one model and writes their shards (used as a Ray actor).

    Args:
        name: Actor name (kept in done-records and the summary).
        store: The run directory.
        model: The model this actor serves.
        max_logprobs: Largest top-k the units ask for.
        backend_factory: Builds the backend (default: the one the model's spec names).
        overlap_writes: Write shards on a background thread while the next unit generates.
    """

    def __init__(
        self,
        name: str,
        store: RunStore,
        model: ModelSpec,
        max_logprobs: int,
        backend_factory: BackendFactory | None = None,
        overlap_writes: bool = True,
    ) -> None:
        started = time.perf_counter()
        self.name = name
        self.store = store
        self.backend = (backend_factory or default_backend_factory)(model, max_logprobs)
        self.startup_seconds = time.perf_counter() - started
        self.ready_at = time.time()
        self.node = _node_name()
        self.writer = (
            ThreadPoolExecutor(1, thread_name_prefix="shard-writer") if overlap_writes else None
        )
        self.pending: list[Future[dict[str, Any]]] = []
        self.lock = threading.Lock()

    def info(self) -> dict[str, Any]:
        """Return where this actor runs: pid, node, GPU ids, start-up time."""
        import ray

        ctx = ray.get_runtime_context()
        return {
            "name": self.name,
            "pid": os.getpid(),
            "node_id": ctx.get_node_id(),
            "gpu_ids": [str(g) for g in ray.get_gpu_ids()],
            "startup_seconds": self.startup_seconds,
            "ready_at": self.ready_at,
            # The build's settings and why (engine.generate.backends.device); fakes have none.
            "engine_settings": getattr(self.backend, "settings", None),
        }

    def run_unit(self, unit: WorkUnit) -> list[dict[str, Any]]:
        """Generate one unit; queue its write. Returns results of writes finished so far.

        Each result holds unit_id, ok, rows, prompt/generated token counts and timings, or an
        error message when the unit failed (the driver retries it).
        """
        started = time.perf_counter()
        began = time.time()  # the scheduler's timeline (wall clock, comparable across processes)
        try:
            raw = self.backend.generate(unit)
        except Exception as exc:  # noqa: BLE001 - reported to the driver, which retries the unit
            return [*self._collect(block=False), _failure(unit, exc)]
        gen_wall = time.perf_counter() - started
        span = (began, time.time())
        if self.writer is None:
            return [self._write(unit, raw, gen_wall, span)]
        # Back-pressure: at most one write in flight beside the new one.
        results = self._collect(block=False)
        while len(self.pending) >= 2:
            results.extend(self._collect(block=True, limit=1))
        self.pending.append(self.writer.submit(self._write, unit, raw, gen_wall, span))
        return results

    def drain(self) -> list[dict[str, Any]]:
        """Wait for every queued write and return their results."""
        return self._collect(block=True)

    def close(self) -> None:
        """Finish writes and free the engine."""
        self.drain()
        if self.writer is not None:
            self.writer.shutdown(wait=True)
        self.backend.close()

    def exit(self) -> None:
        """End this Ray actor's process once its engine is closed (`close`): Ray's intentional
        exit, atexit handlers run. A SIGTERM that still reaches the process while it ends (the
        driver removing its placement group) ends it at once, quietly: Ray's own handler raises
        SystemExit wherever the main thread is, which Python prints as a traceback on the
        driver's console when that is a weakref or garbage-collection callback."""
        import ray

        quiet_sigterm()
        ray.actor.exit_actor()

    def _collect(self, block: bool, limit: int | None = None) -> list[dict[str, Any]]:
        results = []
        still = []
        for future in self.pending:
            if (block and (limit is None or len(results) < limit)) or future.done():
                results.append(future.result())
            else:
                still.append(future)
        self.pending = still
        return results

    def _write(
        self, unit: WorkUnit, raw: Any, gen_wall: float, span: tuple[float, float]
    ) -> dict[str, Any]:
        started = time.perf_counter()
        try:
            table = self.backend.to_table(unit, raw)
            record = self.store.commit_unit(unit.unit_id, table, actor=self.name)
        except Exception as exc:  # noqa: BLE001 - reported to the driver, which retries the unit
            # A full or read-only output location: the driver stops rather than retrying.
            return {**_failure(unit, exc), "storage": is_storage_error(exc)}
        return {
            "unit_id": unit.unit_id,
            "ok": True,
            "actor": self.name,
            "node": self.node,
            "rows": record.rows,
            "errors": sum(e is not None for e in raw.errors) * int(unit.sampling["n"]),
            "prompt_tokens": sum(raw.prompt_tokens),
            "generated_tokens": raw.generated_tokens,
            "gen_seconds": gen_wall,
            "write_seconds": time.perf_counter() - started,
            "gen_span": span,
            # API models: the token account as billed (engine.generate.backends.openai).
            "usage": dict(getattr(raw, "usage", None) or {}),
        }


def _node_name() -> str:
    """The Ray node this process runs on, as "address (node id prefix)"; "local" without Ray."""
    try:
        import ray

        if not ray.is_initialized():
            return "local"
        node_id = ray.get_runtime_context().get_node_id()
        return f"{ray.util.get_node_ip_address()} ({node_id[:8]})"
    except Exception:  # noqa: BLE001 - accounting only: never fail a unit over it
        return "unknown"


def _failure(unit: WorkUnit, exc: BaseException) -> dict[str, Any]:
    result = {
        "unit_id": unit.unit_id,
        "ok": False,
        "error": f"{type(exc).__name__}: {exc}",
        "traceback": traceback.format_exc(limit=5),
    }
    if isinstance(exc, UserError):
        # A refused API key, an unset key variable: every unit would fail the same way, so the
        # driver stops the run with this line instead of retrying (and paying for) each unit.
        result["user_error"] = [exc.message, exc.fix]
    return result
