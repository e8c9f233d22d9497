"""`mic study --target-width`: waves of items, stopping per task, resume without duplicates.

Generation is the in-process `MarkerBackend` (seeded "<marker> <colour>." samples) and the judge
the hash-based `FakeJudge`: the stages, the store, the analysis and its bootstrap are the real ones.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pytest
from helpers.study_helpers import FakeJudge, MarkerBackend, wave_study_spec

from engine.contract import RunLayout
from engine.study import run_study

pytestmark = pytest.mark.slow  # eight small studies with bootstrap analyses: about a minute

ITEMS_PER_SPLIT = 120  # the item limit: 240 per task
LOOSE, TIGHT = 0.3, 0.12


def _factory(log: Path) -> Callable:
    """A backend factory whose backends append every unit they generate to `log`."""
    return lambda model, max_logprobs: MarkerBackend(vocab_size=40, log_path=str(log))


def _study(folder: Path, width: float, **options) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    spec = folder / "waves.toml"
    if not spec.is_file():
        wave_study_spec(folder, ITEMS_PER_SPLIT)
    return run_study(
        spec,
        folder / "out",
        local=True,
        report=False,
        progress=False,
        target_width=width,
        wave_items=40,
        backend_factory=_factory(folder / "units.log"),
        **{"judge": FakeJudge(), **options},
    )


def _shard_rows(out: Path) -> list[tuple]:
    """(task, split, item, sample) of every row in every shard of the study."""
    keys = []
    for shard in sorted((out / RunLayout.SHARDS).iterdir()):
        table = pa.ipc.open_file(pa.OSFile(str(shard))).read_all()
        cols = [table.column(c).to_pylist() for c in ("task", "split", "item_id", "sample_idx")]
        keys.extend(zip(*cols))
    return keys


def _numbers(doc) -> list:
    """Every number of a JSON document in order (null and booleans as text), to compare."""
    if isinstance(doc, dict):
        return [x for k in sorted(doc) for x in _numbers(doc[k])]
    if isinstance(doc, list):
        return [x for v in doc for x in _numbers(v)]
    if isinstance(doc, bool) or doc is None:
        return [str(doc)]
    return [doc] if isinstance(doc, (int, float)) else []


def _logged_units(folder: Path) -> list[str]:
    return [line.split()[0] for line in (folder / "units.log").read_text().splitlines()]


@pytest.fixture(scope="module")
def loose(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    folder = tmp_path_factory.mktemp("loose")
    return folder, _study(folder, LOOSE)


def test_a_loose_width_stops_earlier_than_a_tight_one_and_never_passes_the_limit(
    loose: tuple[Path, dict], tmp_path: Path
) -> None:
    _, result = loose
    tight = _study(tmp_path, TIGHT)
    used = {k: sum(f["items"] for f in r["stopping"]["final"].values()) for k, r in
            (("loose", result), ("tight", tight))}  # fmt: skip
    print(f"items used: {used}")
    assert used["loose"] < used["tight"]
    assert {f["status"] for f in result["stopping"]["final"].values()} == {"stopped"}
    for r in (result, tight):
        for wave in r["waves"]:
            assert all(n <= 2 * ITEMS_PER_SPLIT for n in wave["items"].values())
        # a task that did not stop ran into its limit, and only then
        for f in r["stopping"]["final"].values():
            assert f["status"] in ("stopped", "limit")
            if f["status"] == "limit":
                assert f["items"] == 2 * ITEMS_PER_SPLIT
    rows = _shard_rows(tmp_path / "out")
    assert len(rows) == len(set(rows)) <= 2 * (2 * ITEMS_PER_SPLIT) * 4  # 2 tasks, n = 4
    # no task stops before its second wave (the smoother needs two widths)
    assert all(s != "stopped" for s in tight["waves"][0]["status"].values())


def test_metrics_json_and_the_scored_run_follow_the_last_wave(loose: tuple[Path, dict]) -> None:
    folder, result = loose
    out = folder / "out"
    metrics = json.loads((out / "analysis" / "metrics.json").read_text())
    block = metrics["stopping"]
    assert block["target_width"] == LOOSE and block["metric"] is None
    assert "WidthSmoother" in block["correction"] and block["final_intervals"]
    assert [w["wave"] for w in block["waves"]] == list(range(1, len(result["waves"]) + 1))
    from metrics.io import read_scored

    scored = read_scored(out / "scored")
    last = result["waves"][-1]["items"]
    per_task = scored.responses.group_by("task").len()
    assert dict(per_task.iter_rows()) == last  # the scored run is exactly the waves' items
    # every finished unit was generated once, over all waves
    logged = _logged_units(folder)
    assert len(logged) == len(set(logged))


def test_a_study_killed_between_waves_resumes_to_the_same_result(
    loose: tuple[Path, dict], tmp_path: Path
) -> None:
    folder, whole = loose
    first = _study(tmp_path, LOOSE, max_waves=1)  # "killed" after wave 1
    assert len(first["waves"]) == 1
    resumed = _study(tmp_path, LOOSE)
    logged = _logged_units(tmp_path)
    assert len(logged) == len(set(logged))  # no unit generated twice
    rows = _shard_rows(tmp_path / "out")
    assert len(rows) == len(set(rows)) == len(_shard_rows(folder / "out"))
    assert resumed["waves"] == whole["waves"]
    mine = json.loads((tmp_path / "out" / "analysis" / "metrics.json").read_text())
    theirs = json.loads((folder / "out" / "analysis" / "metrics.json").read_text())
    assert mine["models"] == theirs["models"] and mine["stopping"] == theirs["stopping"]
    # everything stopped: a re-run generates, scores and analyses nothing new
    before = (tmp_path / "out" / "waves.json").read_bytes()
    again = _study(tmp_path, LOOSE)
    assert _logged_units(tmp_path) == logged and again["waves"] == whole["waves"]
    assert (tmp_path / "out" / "waves.json").read_bytes() == before
    # a plain study into the same directory finishes every item, regenerating no unit
    run_study(
        tmp_path / "waves.toml",
        tmp_path / "out",
        local=True,
        report=False,
        progress=False,
        backend_factory=_factory(tmp_path / "units.log"),
        judge=FakeJudge(),
    )
    rows = _shard_rows(tmp_path / "out")
    assert len(rows) == len(set(rows)) == 2 * 2 * ITEMS_PER_SPLIT * 4
    assert len(_logged_units(tmp_path)) == len(set(_logged_units(tmp_path))) > len(logged)
    # ... and the wave study, run again, is its last wave's items again (scored and analysed)
    from metrics.io import read_scored

    assert read_scored(tmp_path / "out" / "scored").responses.height == 2 * 2 * ITEMS_PER_SPLIT
    _study(tmp_path, LOOSE)
    responses = read_scored(tmp_path / "out" / "scored").responses
    assert dict(responses.group_by("task").len().iter_rows()) == whole["waves"][-1]["items"]
    mine = json.loads((tmp_path / "out" / "analysis" / "metrics.json").read_text())
    # the same numbers (the rebuilt scored run may sum in another order: last-digit noise)
    a, b = _numbers(mine["models"]), _numbers(theirs["models"])
    assert [x for x in a if isinstance(x, str)] == [x for x in b if isinstance(x, str)]
    numbers = [[x for x in v if not isinstance(x, str)] for v in (a, b)]
    assert numbers[0] == pytest.approx(numbers[1], rel=1e-9)


def test_judgments_of_earlier_waves_are_kept_and_equal_a_fresh_judging(tmp_path: Path) -> None:
    from engine.score.pipeline import score_run

    judge = FakeJudge()
    result = _study(tmp_path, LOOSE, judge=judge)
    assert len(result["waves"]) == 3
    stage = tmp_path / "out" / "stages" / "confidence"
    record = json.loads((stage / "done.json").read_text())
    reused = pl.read_parquet(stage / "judgments.parquet")
    assert record["reused_judgments"] > 0
    assert reused.height == record["reused_judgments"] + record["judge_prompts"]
    # without keeping them, 3 waves of 80, 160 and 200 items would ask ~2.2x the final pairs
    assert sum(map(len, judge.calls)) < 1.6 * reused.height
    score_run(tmp_path / "out", judge=FakeJudge(), log=False, redo=["confidence"])
    fresh = pl.read_parquet(stage / "judgments.parquet")
    assert json.loads((stage / "done.json").read_text())["reused_judgments"] == 0
    assert fresh.equals(reused)


class _DiesInWave2(FakeJudge):
    """A judge that dies after the first wave's prompts (240 of them), while judging wave 2."""

    def next_token_logprobs(self, prompts):
        if sum(map(len, self.calls)) + len(prompts) > 300:
            raise KeyboardInterrupt
        return super().next_token_logprobs(prompts)


def test_a_study_killed_inside_a_wave_resumes_without_regenerating(
    loose: tuple[Path, dict], tmp_path: Path
) -> None:
    """Killed while wave 2 is being judged (its units generated, waves.json at wave 1)."""
    folder, whole = loose
    with pytest.raises(KeyboardInterrupt):
        _study(tmp_path, LOOSE, judge=_DiesInWave2())
    state = json.loads((tmp_path / "out" / "waves.json").read_text())
    assert len(state["waves"]) == 1
    generated = _logged_units(tmp_path)
    assert len(generated) == 8  # wave 2's units (4 more than wave 1's) were finished
    resumed = _study(tmp_path, LOOSE)
    logged = _logged_units(tmp_path)
    assert logged[: len(generated)] == generated and len(logged) == len(set(logged))
    assert resumed["waves"] == whole["waves"]


def test_a_metric_decides_for_every_task_at_once(tmp_path: Path) -> None:
    result = _study(tmp_path, 0.5, metric="I-AvgMAE")
    for wave in result["waves"]:
        assert len(set(wave["status"].values())) == 1  # the metric pools the tasks
        assert len(set(wave["widths"].values())) == 1
    assert None not in result["waves"][-1]["widths"].values()
    assert result["stopping"]["metric"] == "I-AvgMAE"
    assert all(c["task"] is None for c in result["stopping"]["final_intervals"])


def test_a_new_width_on_resume_continues_with_the_new_target(tmp_path: Path) -> None:
    """A tighter width restarts stopped tasks; going back to the loose one stops them at once."""
    loose = _study(tmp_path, LOOSE)
    n_loose = len(loose["waves"])
    tighter = _study(tmp_path, TIGHT)
    assert len(tighter["waves"]) > n_loose
    grown = tighter["waves"][-1]["items"]
    assert any(grown[t] > n for t, n in loose["waves"][-1]["items"].items())
    assert all(w["target_width"] == TIGHT for w in tighter["waves"][n_loose:])
    back = _study(tmp_path, LOOSE)  # every last width is under the loose target: no new wave
    assert len(back["waves"]) == len(tighter["waves"])
    assert {f["status"] for f in back["stopping"]["final"].values()} == {"stopped"}


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--target-width", "0"], "--target-width 0.0 must be a positive number"),
        (["--target-width", "-1"], "must be a positive number"),
        (["--target-width", "wide"], "--target-width 'wide' is not a number"),
        (["--target-width", "0.1", "--metric", "NOPE"], "--metric 'NOPE' is not a metric"),
        (["--metric", "MRC"], "--metric needs --target-width"),
        (["--target-width", "0.1", "--wave-items", "1"], "--wave-items 1 is too small"),
        (["--target-width", "0.1", "--max-waves", "0"], "--max-waves 0 must be at least 1"),
    ],
)
def test_bad_wave_options_are_one_line_and_exit_2(
    args: list[str], expected: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from engine.cli.main import main

    spec = wave_study_spec(tmp_path)
    code = main(["study", str(spec), "--out", str(tmp_path / "out"), *args])
    err = capsys.readouterr().err.strip()
    assert code == 2 and expected in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "out").exists()  # refused before anything ran


def test_waves_json_fixes_the_metric_and_the_wave_size(loose: tuple[Path, dict]) -> None:
    from engine.errors import UserError

    folder, _ = loose
    with pytest.raises(UserError, match="stops on 'per-task MICs', not 'MRC'"):
        _study(folder, LOOSE, metric="MRC")
    with pytest.raises(UserError, match="add 40 items per task, not 60"):
        run_study(folder / "waves.toml", folder / "out", target_width=LOOSE, wave_items=60)


def test_mic_study_rerun_of_a_finished_study_prints_the_final_state(
    loose: tuple[Path, dict], capsys: pytest.CaptureFixture, ray_local: Any
) -> None:
    """Through the command line: nothing is generated, judged or analysed again; the Ray this
    process already had (the session's) is left running for its owner."""
    from engine.cli.main import main

    folder, result = loose
    out = folder / "out"
    before = (out / "waves.json").read_bytes()
    args = ["study", str(folder / "waves.toml"), "--out", str(out), "--no-report"]
    assert main([*args, "--target-width", str(LOOSE), "--wave-items", "40"]) == 0
    assert ray_local.is_initialized()
    captured = capsys.readouterr()
    assert "nothing new to run" in captured.err and "done in" not in captured.err
    last = result["waves"][-1]
    for task, items in last["items"].items():
        assert f"{task}: {items} items" in captured.err
    assert f"waves:      {len(result['waves'])} (" in captured.out
    assert (out / "waves.json").read_bytes() == before


def test_the_report_shows_the_wave_log(loose: tuple[Path, dict], tmp_path: Path) -> None:
    from metrics.report import build_report

    folder, result = loose
    page = Path(build_report(folder / "out", out=tmp_path / "report.html")).read_text()
    section = page[page.index("<h2>Precision stopping</h2>") :]
    section = section[: section.index("<h2>", 5)]
    rows = section.count("<tr>") - 1  # less the header
    assert rows == sum(len(w["items"]) for w in result["waves"])
    assert "WidthSmoother" in section and f"Target width {LOOSE}" in section


def test_waves_of_another_spec_are_refused_or_restarted_with_new_run(
    loose: tuple[Path, dict], tmp_path: Path
) -> None:
    """Widths measured on one spec say nothing of another's: a changed spec in the same --out is
    refused in one line, and --new-run restarts the waves from the first."""
    import shutil

    from engine.errors import UserError

    folder = tmp_path / "copy"
    shutil.copytree(loose[0], folder)
    spec = folder / "waves.toml"
    spec.write_text(spec.read_text().replace("[sampling]", "[sampling]\ntemperature = 0.7", 1))
    assert "temperature = 0.7" in spec.read_text()
    before = (folder / "out" / "waves.json").read_bytes()
    with pytest.raises(UserError, match="waves.json holds waves of another spec"):
        _study(folder, LOOSE)
    assert (folder / "out" / "waves.json").read_bytes() == before  # nothing lost
    fresh = _study(folder, LOOSE, new_run=True)
    assert fresh["waves"][0]["wave"] == 1 and len(fresh["waves"]) <= len(loose[1]["waves"]) + 1
    doc = json.loads((folder / "out" / "waves.json").read_text())
    assert doc["spec_hash"] and doc["waves"] == fresh["waves"]


def test_study_json_stores_the_judge_url_without_credentials(tmp_path: Path) -> None:
    """The judge endpoint's userinfo and secret query values never reach study.json (as in
    score.json); the study itself runs (a local judge is given)."""
    url = "http://alice:pw-secret-31@127.0.0.1:9/v1?api_key=k-secret-31"
    _study(tmp_path, LOOSE, judges={"base_url": url}, max_waves=1)
    for path in (tmp_path / "out").rglob("*.json"):
        text = path.read_text()
        assert "pw-secret-31" not in text and "k-secret-31" not in text, path
    stored = json.loads((tmp_path / "out" / "study.json").read_text())["judges"]["base_url"]
    assert "127.0.0.1:9" in stored
