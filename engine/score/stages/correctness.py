"""The `correctness` stage: per-response correctness (rule matchers or a yes / no judge)."""

from __future__ import annotations

import polars as pl

from engine.config.judges import ScoreSettings
from engine.contract import content_hash
from engine.errors import CallFailure
from engine.score.inputs import RunInputs, infer_answer_type, load_gold
from engine.score.judges.pool import JudgePool
from engine.score.stage import RESPONSE_COLS, Stage, judge_identity


def stage_correctness(
    inputs: RunInputs, sentences: Stage, settings: ScoreSettings, judges: JudgePool, log: bool
) -> Stage:
    """Per-response correctness: rule matchers, or a yes / no judge (rule result on failure)."""
    from engine.score.rules.correctness import is_correct

    gold = load_gold(inputs.spec_full, inputs.run_dir)
    types = {
        task: settings.answer_types.get(task)
        or infer_answer_type([a for _, a in info["items"].values()])
        for task, info in gold.items()
    }
    stage = Stage(
        inputs.run_dir,
        "correctness",
        [sentences.key, settings.correctness, types],
        log,
        judge=judge_identity(settings) if settings.correctness == "llm" else [],
        extra=[content_hash(sorted((t, sorted(i["items"].items())) for t, i in gold.items()))],
    )
    if stage.resume():
        return stage
    responses = sentences.read("responses")
    rows = responses.select(RESPONSE_COLS + ["text"]).rows(named=True)
    rule: list[bool] = []
    for row in rows:
        item = gold.get(row["task"], {}).get("items", {}).get(row["item_id"])
        if item is None:
            stage.error(row, "item not found in the task file; counted incorrect")
            rule.append(False)
            continue
        rule.append(is_correct(row["text"], item[1], types[row["task"]]))
    correct = list(rule)
    if settings.correctness == "llm" and rows:
        from engine.score.judges.prompts import correctness_prompt
        from engine.score.judges.vllm import NO, YES, yes_no_probability

        def compute(start: int, stop: int) -> pl.DataFrame:
            judge = judges.get()
            ids = judge.token_ids_for([YES, NO])
            chunk = rows[start:stop]
            prompts = []
            for row in chunk:
                q, answers = (
                    gold.get(row["task"], {}).get("items", {}).get(row["item_id"], ("", ()))
                )
                prompts.append(correctness_prompt(q, answers, row["text"]))
            verdicts: list[bool | None] = []
            for row, i, top in zip(chunk, range(start, stop), judge.next_token_logprobs(prompts)):
                p = None if isinstance(top, str) else yes_no_probability(top, ids[YES], ids[NO])
                if p is None:
                    why = top if isinstance(top, str) else "neither yes nor no in the top-k"
                    stage.error(
                        row,
                        f"correctness judge: {why}; used the rule result",
                        call_failed=isinstance(top, CallFailure),
                    )
                    verdicts.append(rule[i])
                else:
                    verdicts.append(p >= 0.5)
            return pl.DataFrame({"correct": verdicts}, schema={"correct": pl.Boolean})

        correct = (
            stage.parts(len(rows), settings.batch_size, compute).get_column("correct").to_list()
        )
    out = responses.select(RESPONSE_COLS).with_columns(
        pl.Series("correct", correct, dtype=pl.Boolean),
        pl.Series("correct_rule", rule, dtype=pl.Boolean),
    )
    stage.finish(
        {"output": out}, {"answer_types": types}, max_failed_share=settings.max_failed_share
    )
    return stage
