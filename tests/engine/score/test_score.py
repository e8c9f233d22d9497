"""`engine.score.pipeline` on an in-process fake run with a fake judge: structure, resume, ledger, modes."""

from __future__ import annotations

import json
import math
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest
from helpers.study_helpers import FakeJudge, fake_run

from engine.config.judges import settings_from
from engine.contract import RESPONSES, SENTENCES
from engine.errors import UserError
from engine.score.inputs import infer_answer_type, load_run
from engine.score.judges.vllm import (
    expected_rating,
    parse_markers,
    parse_verdict,
    yes_no_probability,
)
from engine.score.pipeline import score_run
from engine.score.stages.confidence import consistency_pairs


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fake_run(tmp_path_factory.mktemp("fake") / "run")


@pytest.fixture()
def fresh_run(tmp_path: Path) -> Path:
    return fake_run(tmp_path / "run", tasks=("sample_yesno",))


def test_scored_run_has_the_contract_schemas_and_validates(run_dir: Path) -> None:
    from metrics.io import read_scored

    result = score_run(run_dir, judge=FakeJudge(), log=False)
    responses = pq.read_table(run_dir / "scored" / "responses.parquet")
    sentences = pq.read_table(run_dir / "scored" / "sentences.parquet")
    assert responses.schema.remove_metadata() == RESPONSES
    assert sentences.schema.remove_metadata() == SENTENCES
    meta = sentences.schema.metadata
    assert meta[b"run_id"].decode() == json.loads((run_dir / "run.json").read_text())["run_id"]
    assert meta[b"config_hash"].decode() == result.key
    assert result.responses == 80  # 2 sample tasks x 40 items
    run = read_scored(run_dir / "scored")  # the analysis side's validation
    assert run.responses.height == 80
    maps = json.loads((run_dir / "scored" / "canonical_map.json").read_text())
    assert set(maps) == {"m"}


def test_confidence_is_the_mean_of_present_judgments(run_dir: Path) -> None:
    score_run(run_dir, judge=FakeJudge(), log=False)
    stage = run_dir / "stages" / "confidence"
    judgments = pl.read_parquet(stage / "judgments.parquet")
    conf = pl.read_parquet(stage / "output.parquet")
    keys = ["model", "task", "split", "prompt", "item_id", "sentence_idx"]
    expected = judgments.group_by(keys).agg(pl.col("judgment").mean().alias("want"))
    joined = conf.join(expected, on=keys)
    both = joined.filter(pl.col("want").is_not_null())
    assert both.height > 0
    assert (both["confidence"] - both["want"]).abs().max() < 1e-12
    # a missing judgment (no yes / no in the top-k) is a ledger row naming the sample
    ledger = [json.loads(line) for line in (stage / "errors.jsonl").read_text().splitlines()]
    assert len(ledger) == judgments["judgment"].null_count() > 0
    assert {"item_id", "sentence_idx", "sample_idx", "error"} <= set(ledger[0])


def test_judge_prompts_sharing_a_context_run_together(run_dir: Path) -> None:
    inputs = load_run(run_dir)
    sents = pl.read_parquet(run_dir / "stages" / "sentences" / "sentences.parquet")
    pairs = consistency_pairs(inputs.generations, sents)
    contexts = pairs.select(["task", "split", "item_id", "sample_idx"]).rows()
    seen, previous = set(), None
    for ctx in contexts:
        if ctx != previous:
            assert ctx not in seen, "a context's prompts must be contiguous"
            seen.add(ctx)
        previous = ctx
    assert set(pairs["sample_idx"].unique()) == {1, 2}  # K = n - 1 = 2 samples


def test_stages_resume_and_rerun_only_what_changed(fresh_run: Path) -> None:
    judge = FakeJudge()
    score_run(fresh_run, {"batch_size": 16}, judge=judge, log=False)
    first_calls = len(judge.calls)
    done = {p: p.stat().st_mtime_ns for p in (fresh_run / "stages").glob("*/done.json")}
    score_run(fresh_run, {"batch_size": 16}, judge=judge, log=False)
    assert len(judge.calls) == first_calls  # everything skipped
    assert done == {p: p.stat().st_mtime_ns for p in done}
    # an interrupted confidence stage resumes at its missing batch
    (fresh_run / "stages" / "confidence" / "done.json").unlink()
    parts = sorted((fresh_run / "stages" / "confidence" / "parts").glob("*/part-*.parquet"))
    parts[1].unlink()
    score_run(fresh_run, {"batch_size": 16}, judge=judge, log=False)
    assert len(judge.calls) == first_calls + 1
    # a changed setting reruns its stage only
    score_run(fresh_run, {"batch_size": 16, "decisiveness": "none"}, judge=judge, log=False)
    stamps = {p: p.stat().st_mtime_ns for p in done}
    changed = {p.parent.name for p in done if stamps[p] != done[p]}
    assert changed == {"confidence", "decisiveness"}
    dec = pl.read_parquet(fresh_run / "scored" / "sentences.parquet")["decisiveness"]
    assert dec.null_count() == len(dec)


def test_sampled_consistency_reads_the_seeds_verdicts(fresh_run: Path) -> None:
    score_run(fresh_run, {"confidence": "consistency-sampled"}, judge=FakeJudge(), log=False)
    judgments = pl.read_parquet(fresh_run / "stages" / "confidence" / "judgments.parquet")
    assert set(judgments["judgment"].unique().to_list()) <= {0.0, 0.5, 1.0}
    ledger = (fresh_run / "stages" / "confidence" / "errors.jsonl").read_text()
    assert "unparseable verdict 'maybe'" in ledger


def test_token_prob_confidence_is_a_probability(fresh_run: Path) -> None:
    score_run(fresh_run, {"confidence": "token_prob"}, judge=FakeJudge(), log=False)
    conf = pl.read_parquet(fresh_run / "scored" / "sentences.parquet")["confidence"].drop_nulls()
    assert conf.len() > 0 and conf.min() > 0.0 and conf.max() <= 1.0


def test_bad_settings_are_clear_errors(run_dir: Path) -> None:
    with pytest.raises(UserError, match="judges.confidence"):
        settings_from({"confidence": "vibes"})
    with pytest.raises(UserError, match="unknown key 'judges.temperature'"):
        settings_from({"temperature": 1.0})
    with pytest.raises(UserError, match="judges.top_k"):
        settings_from({"top_k": 50})
    with pytest.raises(UserError, match="not a run directory"):
        score_run(run_dir.parent / "nowhere", judge=FakeJudge(), log=False)


def test_readers() -> None:
    top = {1: math.log(0.3), 2: math.log(0.1), 5: math.log(0.5)}
    assert yes_no_probability(top, {1}, {2}) == pytest.approx(0.75)
    assert yes_no_probability({5: 0.0}, {1}, {2}) is None
    ratings = {str(k): {10 + k} for k in range(11)}
    assert expected_rating({10: math.log(0.2), 20: math.log(0.6)}, ratings) == pytest.approx(0.75)
    assert expected_rating({5: 0.0}, ratings) is None
    assert parse_verdict(" Yes, it is") == 1.0
    assert parse_verdict("no.") == 0.0
    assert parse_verdict("N/A") == 0.5
    assert parse_verdict("perhaps") is None
    assert parse_markers(" I think | probably", "I think it is probably Paris.") == [
        "I think",
        "probably",
    ]
    assert parse_markers("none", "It is Paris.") == []
    assert parse_markers("gibberish words", "It is Paris.") is None
    assert parse_markers("\ufffd | ro", "a \ufffd brown fox") is None  # symbols, part-words
    assert infer_answer_type([["A"], ["C"]]) == "mc"
    assert infer_answer_type([["yes"], ["no"]]) == "yesno"
    assert infer_answer_type([["42"], ["1,000"]]) == "number"
    assert infer_answer_type([["Paris"]]) == "free"


def test_llm_extraction_and_correctness_modes_ledger_unreadable_output(fresh_run: Path) -> None:
    from metrics.io import read_scored

    settings = {"extract": "llm", "correctness": "llm"}
    result = score_run(fresh_run, settings, judge=FakeJudge(), log=False)
    # the fake judge answers "yes" / "no" / "n/a" / "maybe": never a marker of the sentence
    markers = (fresh_run / "stages" / "markers" / "errors.jsonl").read_text().splitlines()
    assert result.errors["markers"] == len(markers) > 0
    assert "not readable" in markers[0] and "used the lexicon" in markers[0]
    correctness = pl.read_parquet(fresh_run / "stages" / "correctness" / "output.parquet")
    assert correctness["correct"].null_count() == 0  # a failed judgment falls back to the rule
    assert result.errors["correctness"] > 0  # (every third fake prompt has no yes / no)
    read_scored(fresh_run / "scored")


def test_llm_canonicalization_keeps_only_sub_phrases(fresh_run: Path) -> None:
    from engine.score.judges.vllm import parse_canonical

    assert parse_canonical(" fairly certain\nExpression: x", "I am fairly certain") == (
        "fairly certain"
    )
    assert parse_canonical("very sure", "I am fairly certain") is None
    assert parse_canonical("", "probably") is None
    score_run(fresh_run, {"canonical": "llm"}, judge=FakeJudge(), log=False)
    maps = json.loads((fresh_run / "scored" / "canonical_map.json").read_text())
    assert maps["m"]["<no_hedge>"] == "<no_hedge>"


class _DeadJudge(FakeJudge):
    """A judge whose server never answers: every call fails (as with an unreachable --judge-url)."""

    def next_token_logprobs(self, prompts):  # type: ignore[no-untyped-def]
        from engine.errors import CallFailure

        self.calls.append(list(prompts))
        return [CallFailure("gave up after 6 attempts: ConnectError") for _ in prompts]


def test_failed_judge_calls_fail_the_stage_and_are_retried(fresh_run: Path) -> None:
    """An unreachable judge: the stage is not recorded as done, the error names count and cause,
    and a re-run with a working judge retries the failed batches and finishes."""
    from engine.errors import StageFailed

    settings = {"confidence": "consistency-logprob", "decisiveness": "none", "batch_size": 7}
    with pytest.raises(StageFailed) as info:
        score_run(fresh_run, settings, judge=_DeadJudge(), log=False)
    message = str(info.value)
    assert "'confidence'" in message and "judge calls failed" in message
    assert "ConnectError" in message and "re-run" in message
    assert info.value.exit_code == 1
    assert not (fresh_run / "stages" / "confidence" / "done.json").exists()
    ledger = (fresh_run / "stages" / "confidence" / "errors.jsonl").read_text().splitlines()
    assert ledger and all(json.loads(x)["kind"] == "call_failed" for x in ledger)

    judge = FakeJudge()
    result = score_run(fresh_run, settings, judge=judge, log=False)
    assert judge.calls, "the failed batches were retried, not reused"
    failed, calls = result.failed_calls["confidence"]
    assert failed == 0 and calls > 0
    assert "confidence 0/" in result.failure_summary()
    confidence = pl.read_parquet(fresh_run / "scored" / "sentences.parquet")["confidence"]
    assert confidence.drop_nulls().len() > 0


def test_a_minority_of_failed_calls_is_reported_not_fatal(fresh_run: Path) -> None:
    """Failures under --max-failed-share: the stage is done and the share is reported."""

    class _Flaky(FakeJudge):
        def next_token_logprobs(self, prompts):  # type: ignore[no-untyped-def]
            from engine.errors import CallFailure

            out = super().next_token_logprobs(prompts)
            return [CallFailure("HTTP 503") if i % 5 == 0 else o for i, o in enumerate(out)]

    settings = {"confidence": "consistency-logprob", "decisiveness": "none"}
    result = score_run(fresh_run, settings, judge=_Flaky(), log=False)
    failed, calls = result.failed_calls["confidence"]
    assert 0 < failed < calls / 2
    record = json.loads((fresh_run / "stages" / "confidence" / "done.json").read_text())
    assert record["failed_calls"] == failed and record["judge_calls"] == calls
    with pytest.raises(UserError, match="not a stage"):
        score_run(fresh_run, settings, judge=FakeJudge(), log=False, redo=["nope"])
    # --redo runs the stage again (with a healthy judge now) and the scored key changes.
    judge = FakeJudge()
    again = score_run(fresh_run, settings, judge=judge, log=False, redo=["confidence"])
    assert judge.calls and again.failed_calls["confidence"][0] == 0
    assert again.key != result.key


def test_switching_an_http_judge_for_a_local_one_of_the_same_name_rescores(fresh_run: Path) -> None:
    # Same model name, once behind a server and once as a local engine: different judges, so the
    # judge stages run again; the endpoint enters the key without its credentials.
    settings = {"confidence": "consistency-logprob", "decisiveness": "llm", "model": "judge-x"}
    url = "http://user:s3cret@judge.example:8000/v1?api_key=s3cret"
    record = fresh_run / "scored" / "score.json"
    served = score_run(fresh_run, {**settings, "base_url": url}, judge=FakeJudge(), log=False)
    served_keys = json.loads(record.read_text())["stage_keys"]
    judge = FakeJudge()
    local = score_run(fresh_run, settings, judge=judge, log=False)
    local_keys = json.loads(record.read_text())["stage_keys"]
    assert judge.calls  # the judge stages were not skipped
    assert local.key != served.key
    changed = {name for name in local_keys if local_keys[name] != served_keys[name]}
    assert changed == {"confidence", "decisiveness"}  # the stages that call the judge
    # The same local judge again: every stage is done, no judge call.
    again = FakeJudge()
    score_run(fresh_run, settings, judge=again, log=False)
    assert not again.calls
    for path in [record, *(fresh_run / "stages").rglob("*.json")]:
        assert "s3cret" not in path.read_text(), path


def test_the_judge_identity_names_the_endpoint_without_credentials() -> None:
    from engine.config.judges import settings_from
    from engine.score.stage import judge_identity

    served = settings_from({"model": "m", "base_url": "http://u:pw@host:1/v1"})
    local = settings_from({"model": "m"})
    assert judge_identity(served) != judge_identity(local)
    assert judge_identity(served)[-1] == {"endpoint": "http://host:1/v1"}
    assert judge_identity(local) == ["m", {}, False]
    assert judge_identity(local, top_k=True) == ["m", {}, False, 20]


def test_the_python_api_returns_a_frozen_score_result(fresh_run: Path) -> None:
    import dataclasses

    import engine

    result = engine.score_run(fresh_run, {"decisiveness": "none"}, judge=FakeJudge(), log=False)
    assert isinstance(result, engine.ScoreResult)
    assert result.scored_dir == fresh_run / "scored" and result.responses > 0
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.responses = 0  # type: ignore[misc]


def test_judge_chat_template_kwargs_are_checked_and_key_the_stage_only_when_set() -> None:
    from engine.score.stage import judge_identity

    plain = settings_from({"chat": True})
    off = settings_from({"chat": True, "chat_template_kwargs": {"enable_thinking": False}})
    assert off.chat_template_kwargs == {"enable_thinking": False}
    # Empty (the default): the identity of stages judged before the key existed (they resume).
    assert judge_identity(plain) == [plain.model, plain.judge_engine_args(), True]
    assert judge_identity(off) != judge_identity(plain)
    with pytest.raises(UserError, match="'judges.chat_template_kwargs' is set but 'judges.chat'"):
        settings_from({"chat_template_kwargs": {"enable_thinking": False}})
    with pytest.raises(UserError, match="'judges.chat_template_kwargs' is 'x'"):
        settings_from({"chat": True, "chat_template_kwargs": "x"})
