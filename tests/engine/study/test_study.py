"""Study specs: task preparation, offline validation of the shipped specs, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import REPO

from engine.errors import UserError
from engine.study import check_analysis, check_study_spec, prepare_study

CONFIGS = REPO / "configs"


@pytest.mark.parametrize("name", ["demo", "seed_study", "marcon"])
def test_shipped_specs_validate_offline(name: str) -> None:
    info = check_study_spec(CONFIGS / f"{name}.toml")
    if name != "demo":
        assert info["sampling"]["n"] == 21 and info["sampling"]["temperature"] == 1.0
        assert info["analysis"]["threshold"] == 10
        assert all("registry:" in t for t in info["tasks"])
    expected = {"demo": 3, "seed_study": 11, "marcon": 7}[name]
    assert len(info["tasks"]) == expected


def test_sample_tasks_are_prepared_with_instructions_and_options(tmp_path: Path) -> None:
    raw = {
        "tasks": [
            {"name": "mc", "source": "sample:sample_science_mc", "splits": ["train", "test"]},
            {"name": "yn", "source": "sample:sample_yesno", "answer_type": "yesno"},
        ],
        "judges": {"confidence": "token_prob"},
        "analysis": {"threshold": 2},
    }
    engine_raw, study = prepare_study(raw, tmp_path)
    rows = [json.loads(x) for x in (tmp_path / "tasks" / "mc.jsonl").read_text().splitlines()]
    assert len(rows) == 40 and {r["split"] for r in rows} == {"train", "test"}
    assert "\nA. " in rows[0]["question"] and rows[0]["question"].startswith("Answer the following")
    assert engine_raw["tasks"][0]["source"] == str(tmp_path / "tasks" / "mc.jsonl")
    assert "answer_type" not in engine_raw["tasks"][1]
    assert "judges" not in engine_raw and "analysis" not in engine_raw  # not part of the run id
    assert study["judges"]["answer_types"] == {"mc": "mc", "yn": "yesno"}
    mtime = (tmp_path / "tasks" / "mc.jsonl").stat().st_mtime_ns
    prepare_study(raw, tmp_path)  # prepared once
    assert (tmp_path / "tasks" / "mc.jsonl").stat().st_mtime_ns == mtime


def test_bad_study_input(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="unknown sample task"):
        prepare_study({"tasks": [{"name": "x", "source": "sample:nope"}]}, tmp_path)
    with pytest.raises(UserError, match="analysis.colour"):
        prepare_study({"tasks": [], "analysis": {"colour": 1}}, tmp_path)
    # The rank correlations' resolution reaches `metrics.analyze` from a study spec too.
    from engine.study.stages import analysis_options

    analysis = check_analysis({"rank_resolution": 0})
    assert analysis == {"rank_resolution": 0.0} and analysis_options(analysis) == analysis
    with pytest.raises(UserError, match="analysis.rank_resolution"):
        check_analysis({"rank_resolution": "fine"})
    with pytest.raises(UserError, match=r"analysis.rank_resolution.*\[0, 1\]"):
        check_analysis({"rank_resolution": 2})  # before generation, not after it
    # A judge URL with credentials in a study spec is refused too (and never printed).
    url = "http://u:pw-secret-8@judge/v1"
    with pytest.raises(UserError) as info:
        prepare_study({"tasks": [], "judges": {"base_url": url}}, tmp_path, "s.toml")
    assert "judges.base_url" in str(info.value) and "pw-secret-8" not in str(info.value)
    with pytest.raises(UserError) as info:  # `mic study --check` used to print it back
        check_study_spec(CONFIGS / "demo.toml", [f"judges.base_url={url}"])
    assert "judges.base_url" in str(info.value) and "pw-secret-8" not in str(info.value)
    spec = tmp_path / "bad.toml"
    text = (CONFIGS / "seed_study.toml").read_text().replace("registry:popqa", "registry:nope")
    spec.write_text(text)
    with pytest.raises(UserError):
        check_study_spec(spec)
    spec.write_text((CONFIGS / "demo.toml").read_text().replace('"consistency-logprob"', '"x"'))
    with pytest.raises(UserError, match="judges.confidence"):
        check_study_spec(spec)


def test_the_demo_spec_ships_as_package_data_identical_to_configs() -> None:
    """`mic demo` reads the packaged copy (any install, any directory); configs/ holds the same
    file for people to read and copy. They must not drift apart."""
    from engine.study import demo_spec

    packaged = demo_spec()
    assert packaged.is_file() and "site-packages" not in str(CONFIGS)
    assert packaged.read_bytes() == (CONFIGS / "demo.toml").read_bytes()


@pytest.mark.parametrize("name", ["demo", "seed_study", "marcon", "tiny"])
def test_mic_plan_takes_every_bundled_spec_offline(name: str, capsys, monkeypatch) -> None:
    """Study specs (sample: and registry: tasks) plan without network; hub tasks are estimated."""
    from engine.cli import main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["plan", str(CONFIGS / f"{name}.toml"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["totals"]["prompts"] > 0 and report["units"]
    if name in ("seed_study", "marcon"):
        assert len(report["estimated_tasks"]) == {"seed_study": 11, "marcon": 7}[name]
    else:
        assert report["estimated_tasks"] == []


def test_study_plan_with_a_target_width_shows_the_waves(tmp_path: Path, capsys) -> None:
    # `--plan` used to ignore `--target-width`: the wave schedule is part of what gets run.
    from engine.cli import main
    from engine.study import demo_spec

    argv = ["study", str(demo_spec()), "--out", str(tmp_path / "o"), "--plan"]
    assert main([*argv, "--target-width", "0.1", "--wave-items", "40"]) == 0
    out = capsys.readouterr().out
    assert "about 40 items per wave" in out and "at most 0.1 wide" in out
    # The demo's tasks have 60 items per split: 20 per split per wave, 3 waves at most.
    assert (
        out.count("20 items per split per wave (2 splits), 120 items in all, at most 3 waves") == 3
    )
    assert main([*argv, "--target-width", "0.1", "--wave-items", "40", "--max-waves", "2"]) == 0
    assert "at most 2 waves" in capsys.readouterr().out
    assert main(argv) == 0
    assert "waves:" not in capsys.readouterr().out  # a plain study: no wave lines


def test_study_plan_of_a_resumed_study_uses_the_stored_wave_size(tmp_path: Path, capsys) -> None:
    # The preview used to ignore DIR/waves.json: a resumed study keeps its stored wave size, so
    # the preview showed a schedule the run would not follow (or refuse).
    from engine.cli import main
    from engine.study import demo_spec
    from engine.study.waves import WAVE_STATE_VERSION

    out_dir = tmp_path / "o"
    out_dir.mkdir()
    state = {"version": WAVE_STATE_VERSION, "metric": None, "wave_items": 60, "chunk_size": 10}
    (out_dir / "waves.json").write_text(json.dumps({**state, "waves": [{}, {}]}))
    argv = ["study", str(demo_spec()), "--out", str(out_dir), "--plan", "--target-width", "0.1"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "about 60 items per wave" in out and "resuming: 2 waves already analysed" in out
    assert (
        out.count("30 items per split per wave (2 splits), 120 items in all, at most 2 waves") == 3
    )
    # Another wave size than the stored one is refused, as the run refuses it.
    assert main([*argv, "--wave-items", "40"]) == 2
    err = capsys.readouterr().err
    assert "waves.json" in err and "--wave-items 60" in err
    damaged_docs = [
        "{",
        "[]",
        json.dumps({"version": WAVE_STATE_VERSION, "wave_items": 5}),
        json.dumps({k: v for k, v in state.items() if k != "chunk_size"}),  # was a KeyError
        json.dumps({**state, "waves": {"0": {}}}),
        json.dumps({**state, "wave_items": "60"}),
        json.dumps({**state, "smoother": {"history": [1]}}),  # was a TypeError at the smoother
    ]
    for damaged in damaged_docs:
        (out_dir / "waves.json").write_text(damaged)
        assert main(argv) == 2, damaged  # one line, not a traceback (a list / a missing key)
        assert "damaged" in capsys.readouterr().err
