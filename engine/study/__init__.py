"""`mic score`, `mic study` and `mic demo`: a sweep spec to generations, a scored run and MICs.

A *study spec* is a sweep spec (engine.config.sweep) whose tasks may also name a bundled sample task
(`source = "sample:sample_facts"`) or a registry task of the two studies
(`source = "registry:popqa"`, loaded from the Hugging Face hub). `mic study` prepares those tasks
as plain JSONL files in `DIR/tasks/` (question with the task's instruction and lettered options,
gold answers, split) and then runs, resuming each stage that is already done:

    DIR/tasks/*.jsonl       prepared task files (kept; a hub task is loaded once)
    DIR/run.json, shards/   generation (`engine.generate.runner.run_sweep`, resumable by unit)
    DIR/stages/*            scoring stages (`engine.score.score_run`, resumable by stage)
    DIR/scored/             the scored run (docs/method.md §8)
    DIR/analysis/           `metrics.analyze` output (metrics.json, mic.parquet)
    DIR/report.html         `metrics.report.build_report`, when that module is installed

The `[judges]` and `[analysis]` tables do not change generation, so they are kept out of the
generation run's identity (in `DIR/study.json`): changing a judge re-scores without re-generating.
Modules: `spec` (study specs, prepared tasks, the plan), `stages` (generation + scoring, the
analysis, the report), `waves` (precision-stopped studies), `run` (`run_study`, the demo).
"""

from engine.study.run import DEMO_NOTE, run_demo, run_study
from engine.study.spec import (
    ANALYSIS_KEYS,
    check_analysis,
    check_study_spec,
    demo_spec,
    plan_study,
    prepare_study,
)
from engine.study.stages import (
    build_study_report,
    generate_and_score,
    run_analysis,
    run_local,
    study_outcome,
)
from engine.study.waves import (
    DEFAULT_BOOTSTRAP,
    WAVE_STATE_VERSION,
    WavePlan,
    check_wave_options,
    default_wave_items,
    known_metrics,
    run_waves,
    split_step,
    stopping_block,
    wave_lines,
)

__all__ = [
    "ANALYSIS_KEYS",
    "DEFAULT_BOOTSTRAP",
    "DEMO_NOTE",
    "WAVE_STATE_VERSION",
    "WavePlan",
    "build_study_report",
    "check_analysis",
    "check_study_spec",
    "check_wave_options",
    "default_wave_items",
    "demo_spec",
    "generate_and_score",
    "known_metrics",
    "plan_study",
    "prepare_study",
    "run_analysis",
    "run_demo",
    "run_local",
    "run_study",
    "run_waves",
    "split_step",
    "stopping_block",
    "study_outcome",
    "wave_lines",
]
