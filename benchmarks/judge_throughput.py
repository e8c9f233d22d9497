"""Consistency-judge throughput: prefix-ordered batches vs arrival order vs one prompt at a time.

Takes the consistency prompts of a scored demo run (every sentence x every consistency sample) and
reads P(yes) / (P(yes) + P(no)) for each, three ways, on ONE engine with prefix caching on (the
prefix cache is reset before each measurement so none profits from another's cache):

  1. prefix-ordered: one batch, prompts sorted by (context sample, sentence) - what `mic score` does;
  2. arrival order: one batch, sentence by sentence, each sentence's K samples in turn (contexts
     interleave, so shared prefixes are far apart);
  3. one at a time: one `generate` call per prompt, the seed's pattern of one API call per judgment
     (on the first --single prompts only, to keep the run short).

Prints judge prompts/s for each and the ratios, checks that the three give the same values, and
saves a JSON beside the run.

Run:  mic demo --out runs/demo   # once, to have sentences and samples
      python benchmarks/judge_throughput.py runs/demo --single 200
Engine start-up is excluded.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

for _key, _value in {
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}.items():
    os.environ.setdefault(_key, _value)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", help="a run scored by `mic demo` / `mic score`")
    parser.add_argument("--judge", default="builtin:tiny", help="judge model")
    parser.add_argument("--single", type=int, default=200, help="prompts for one-at-a-time")
    parser.add_argument("--repeat", type=int, default=2, help="times each batch mode is run")
    args = parser.parse_args()

    import polars as pl

    from engine.config.judges import TINY_JUDGE_ENGINE_ARGS
    from engine.score.inputs import load_run
    from engine.score.judges.prompts import consistency_prompt
    from engine.score.judges.vllm import VLLMJudge
    from engine.score.stage import SENTENCE_COLS
    from engine.score.stages.confidence import consistency_logprob_values, consistency_pairs

    run_dir = Path(args.run_dir)
    sentences_file = run_dir / "stages" / "sentences" / "sentences.parquet"
    if not sentences_file.is_file():
        print(f"{sentences_file} is missing: run `mic demo --out {run_dir}` first", file=sys.stderr)
        return 2
    pairs = consistency_pairs(load_run(run_dir).generations, pl.read_parquet(sentences_file))
    arrival = pairs.sort([*SENTENCE_COLS, "sample_idx"])

    def prompts_of(df: pl.DataFrame) -> list[str]:
        return [consistency_prompt(c, a) for c, a in zip(df["context"], df["assertion"])]

    ordered_prompts, arrival_prompts = prompts_of(pairs), prompts_of(arrival)
    args_engine = TINY_JUDGE_ENGINE_ARGS if args.judge == "builtin:tiny" else {}
    judge = VLLMJudge(args.judge, args_engine)
    judge.token_ids_for(["yes"])  # build the vocabulary table outside the timings
    results: dict[str, dict[str, float]] = {}

    def measure(name: str, prompts: list[str], single: bool) -> list:
        best, values = float("inf"), []
        for _ in range(1 if single else args.repeat):
            judge.llm.reset_prefix_cache()
            t0 = time.perf_counter()
            if single:
                values = [consistency_logprob_values(judge, [p])[0] for p in prompts]
            else:
                values = consistency_logprob_values(judge, prompts)
            best = min(best, time.perf_counter() - t0)
        results[name] = {
            "prompts": len(prompts),
            "seconds": best,
            "prompts_per_s": len(prompts) / best,
        }
        print(
            f"{name:>15}: {len(prompts):>6} prompts in {best:7.2f} s = {len(prompts) / best:8.1f} prompts/s"
        )
        return values

    ordered = measure("prefix-ordered", ordered_prompts, False)
    arrived = measure("arrival order", arrival_prompts, False)
    single = measure("one at a time", ordered_prompts[: args.single], True)
    judge.close()

    by_prompt = dict(zip(ordered_prompts, ordered))
    same = all(
        (by_prompt[p] == v) or (isinstance(v, float) and abs(by_prompt[p] - v) < 1e-4)
        for p, v in zip(arrival_prompts, arrived)
    ) and all(
        (by_prompt[p] == v) or (isinstance(v, float) and abs(by_prompt[p] - v) < 1e-4)
        for p, v in zip(ordered_prompts, single)
    )
    ratio_arrival = (
        results["prefix-ordered"]["prompts_per_s"] / results["arrival order"]["prompts_per_s"]
    )
    ratio_single = (
        results["prefix-ordered"]["prompts_per_s"] / results["one at a time"]["prompts_per_s"]
    )
    print(f"prefix-ordered / arrival order: {ratio_arrival:.2f}x")
    print(f"prefix-ordered / one at a time: {ratio_single:.2f}x")
    print(f"same values in all three modes (1e-4): {same}")
    command = " ".join(["python", *sys.argv])
    print(f"command: {command}")
    out = run_dir / "judge_throughput.json"
    out.write_text(
        json.dumps(
            {
                "command": command,
                "judge": args.judge,
                "results": results,
                "ratio_prefix_vs_arrival": ratio_arrival,
                "ratio_prefix_vs_single": ratio_single,
                "same_values": same,
            },
            indent=2,
        )
    )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
