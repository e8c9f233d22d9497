"""The `canonical` stage: one raw -> canonical marker map per model."""

from __future__ import annotations

import polars as pl

from engine.config.judges import ScoreSettings
from engine.contract import NO_HEDGE
from engine.score.inputs import RunInputs
from engine.score.judges.pool import JudgePool
from engine.score.stage import Stage, judge_identity


def stage_canonical(
    inputs: RunInputs, markers: Stage, settings: ScoreSettings, judges: JudgePool, log: bool
) -> Stage:
    """One raw -> canonical marker map per model, over all its tasks.

    `rules`: the deterministic rules of `engine.score.rules.canonical`. `llm`: a judge first proposes a
    short canonical form for each distinct raw marker (greedy, few-shot); a proposal is kept only
    when it is a sub-phrase of the raw marker (so the judge can shorten, never invent), and the
    rules then run over the merged forms. A rejected proposal is a ledger row.
    """
    from engine.score.judges.prompts import canonical_prompt
    from engine.score.judges.vllm import parse_canonical
    from engine.score.rules.canonical import build_canonical_map

    llm = settings.canonical == "llm"
    judge = judge_identity(settings) if llm else []
    stage = Stage(inputs.run_dir, "canonical", [markers.key, settings.canonical], log, judge=judge)
    if stage.resume():
        return stage
    counts = markers.read().group_by(["model", "raw_marker"]).len().sort(["model", "raw_marker"])
    merge: dict[str, str] = {}
    if llm:
        raws = sorted({m for m in counts["raw_marker"].to_list() if m != NO_HEDGE})
        outs = judges.get().generate_texts(
            [canonical_prompt(m) for m in raws], 8, 0.0, [0] * len(raws)
        )
        stage.count_calls(len(raws))
        for raw, out in zip(raws, outs):
            form = None if isinstance(out, Exception) else parse_canonical(out, raw)
            if form is None:
                stage.error(
                    {"raw_marker": raw},
                    f"canonical form rejected: {out!r}",
                    call_failed=isinstance(out, Exception),
                )
            else:
                merge[raw] = form
    rows = []
    for (model,), group in counts.group_by(["model"], maintain_order=True):
        mapping = build_canonical_map(dict(zip(group["raw_marker"], group["len"])), merge)
        rows.extend((model, raw, canon) for raw, canon in mapping.items())
    out = pl.DataFrame(
        rows,
        schema={"model": pl.String, "raw_marker": pl.String, "marker": pl.String},
        orient="row",
    )
    stage.finish({"output": out}, max_failed_share=settings.max_failed_share)
    return stage
