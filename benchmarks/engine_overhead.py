"""The engine's own overhead: the same prompts through plain `LLM.generate` and `mic run`.

Measures, on the tiny model (or --model), with identical prompts, seeds and engine arguments:
  1. plain `LLM.generate` with vLLM's default output settings (detokenize, dict logprobs);
  2. plain `LLM.generate` with the fastest settings found (detokenize=False, flat_logprobs);
  3. `mic run` with one actor (Ray, Arrow shards, done-records, manifest), for each top-k in
     --curve: the logprobs cost curve.
Prints generated tokens/s of each, the ratio of `mic run` to the fastest plain setting (target
>= 0.90) and the ratio of k = 5 to k = 0 (target >= 0.85), and saves a JSON next to it.

Run:  python benchmarks/engine_overhead.py --prompts 2000 --n 4 --max-tokens 16
Engine start-up is excluded everywhere; at most one engine is alive at a time.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
for _key, _value in {
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}.items():
    os.environ.setdefault(_key, _value)


def _spec(args: argparse.Namespace, task_file: Path, k: int) -> Any:
    from engine.config.sweep import validate

    return validate(
        {
            "run": {"name": "overhead", "chunk_size": args.chunk_size},
            "models": [
                {
                    "name": "bench",
                    "path": args.model,
                    "engine_args": {"dtype": "float32", "max_model_len": 256},
                }
            ],
            "tasks": [{"name": "bench", "source": str(task_file), "splits": ["test"]}],
            "prompts": [{"id": "plain", "template": "Question: {question}\nAnswer:"}],
            "sampling": {
                "n": args.n,
                "max_tokens": args.max_tokens,
                "logprobs": k,
                "temperature": 1.0,
                "seed": 0,
            },
        }
    )


def _task_file(directory: Path, prompts: int) -> Path:
    from engine.tasks.builtin import builtin_task_names, builtin_task_path

    questions = []
    for name in builtin_task_names():
        for line in builtin_task_path(name).read_text().splitlines():
            questions.append(json.loads(line)["question"])
    path = directory / "bench.jsonl"
    with path.open("w") as fh:
        for i in range(prompts):
            q = questions[i % len(questions)]
            fh.write(
                json.dumps({"id": f"b{i:06d}", "question": q, "answers": [], "split": "test"})
                + "\n"
            )
    return path


def _plain(args: argparse.Namespace, spec: Any) -> dict[str, float]:
    from vllm import LLM, SamplingParams

    from engine.generate.tiny_model import resolve_model
    from engine.generate.units import plan_units

    units = plan_units(spec)
    prompts = [{"prompt": f"Question: {q}\nAnswer:"} for u in units for q in u.questions]
    seeds = [s for u in units for s in u.seeds]
    path = resolve_model(args.model)
    llm = LLM(model=path, dtype="float32", max_model_len=256, enable_chunked_prefill=False, seed=0)
    results = {}
    settings = {
        "plain_fastest": {"detokenize": False, "flat_logprobs": True},
        "plain_defaults": {},
    }
    try:
        # Warm-up on a different slice of prompts, so neither setting pays first-batch costs.
        warm = prompts[: args.chunk_size]
        llm.generate(warm, SamplingParams(n=args.n, max_tokens=args.max_tokens), use_tqdm=False)
        for name, extra in settings.items():
            params = [
                SamplingParams(
                    n=args.n, max_tokens=args.max_tokens, logprobs=args.logprobs, seed=s, **extra
                )
                for s in seeds
            ]
            started = time.perf_counter()
            outputs = llm.generate(prompts, params, use_tqdm=False)
            seconds = time.perf_counter() - started
            tokens = sum(len(c.token_ids) for o in outputs for c in o.outputs)
            results[name] = tokens / seconds
            print(f"{name}: {tokens} tokens in {seconds:.1f} s", file=sys.stderr, flush=True)
            del outputs
            gc.collect()
    finally:
        del llm
        gc.collect()
    return results


def _mic_run(args: argparse.Namespace, task_file: Path, k: int, out: Path) -> dict[str, Any]:
    from engine.generate.runner import run_sweep

    summary = run_sweep(_spec(args, task_file, k), str(out), actors=1, progress=False)
    model = summary["models"]["bench"]
    print(
        f"mic run k={k}: {model['generated_tokens']} tokens in {model['busy_seconds']:.1f} s busy",
        file=sys.stderr,
        flush=True,
    )
    return model


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="builtin:tiny")
    parser.add_argument("--prompts", type=int, default=2000)
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--logprobs", type=int, default=5, help="top-k of the plain comparison")
    parser.add_argument("--curve", default="0,1,5,20", help="top-k settings of the mic run curve")
    parser.add_argument("--chunk-size", type=int, default=500, help="items per work unit")
    parser.add_argument("--out", default="benchmarks/results/engine_overhead.json")
    args = parser.parse_args(argv)
    curve = [int(k) for k in args.curve.split(",")]
    command = "python benchmarks/engine_overhead.py " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    with tempfile.TemporaryDirectory(prefix="mic-overhead-") as tmp:
        task_file = _task_file(Path(tmp), args.prompts)
        plain = _plain(args, _spec(args, task_file, args.logprobs))
        # The k of the plain comparison runs first, right after the plain measurements.
        order = sorted(curve, key=lambda k: k != args.logprobs)
        runs = {k: _mic_run(args, task_file, k, Path(tmp) / f"run-k{k}") for k in order}
        runs = {k: runs[k] for k in curve}
    import ray

    ray.shutdown()
    mic = {k: m["generated_tokens_per_second"] for k, m in runs.items()}
    fastest = plain["plain_fastest"]
    lines = [
        f"command: {command}",
        f"{args.prompts} prompts x n = {args.n}, max_tokens = {args.max_tokens}, model {args.model}",
        f"{'setting':<34}{'generated tok/s':>16}{'ratio to fastest plain':>24}",
        f"{'plain LLM.generate, defaults':<34}{plain['plain_defaults']:>16,.0f}"
        f"{plain['plain_defaults'] / fastest:>24.2f}",
        f"{'plain LLM.generate, fastest':<34}{fastest:>16,.0f}{1.0:>24.2f}",
    ]
    for k, rate in mic.items():
        label = f"mic run, 1 actor, k = {k}"
        lines.append(f"{label:<34}{rate:>16,.0f}{rate / fastest:>24.2f}")
    verdicts = {}
    if args.logprobs in mic:
        verdicts["mic_vs_fastest_plain"] = mic[args.logprobs] / fastest
        lines.append(
            f"mic run / fastest plain at k = {args.logprobs}: {verdicts['mic_vs_fastest_plain']:.2f} "
            "(target >= 0.90)"
        )
    if 0 in mic and 5 in mic:
        verdicts["k5_vs_k0"] = mic[5] / mic[0]
        lines.append(f"mic run k = 5 / k = 0: {verdicts['k5_vs_k0']:.2f} (target >= 0.85)")
    print("\n".join(lines))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {"command": command, "plain": plain, "mic_run": runs, "ratios": verdicts}, indent=2
        )
    )
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
