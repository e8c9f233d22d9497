"""The engine's `mic` subcommands: plan, tiny-model, bad input exits 2 (fast, no engine)."""

from __future__ import annotations

import json
from pathlib import Path

from helpers import REPO
from helpers.engine_helpers import make_raw_spec, write_toml

from engine.cli import main


def test_plan_prints_units_and_estimates(capsys) -> None:
    assert main(["plan", str(REPO / "configs" / "tiny.toml"), "--set", "sampling.n=21"]) == 0
    text = capsys.readouterr().out
    assert "240 prompts" in text and "5,040 samples" in text and "GPU-h" in text
    assert main(["plan", str(REPO / "configs" / "tiny.toml"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["totals"]["prompts"] == 240
    assert report["totals"]["max_generated_tokens"] == 240 * 4 * 16
    assert len(report["units"]) == report["totals"]["units"]


def test_bad_spec_exits_2_naming_the_key(tmp_path: Path, capsys) -> None:
    path = write_toml(tmp_path / "bad.toml", make_raw_spec(sampling={"n": -1}))
    assert main(["plan", str(path)]) == 2
    err = capsys.readouterr().err
    assert "sampling.n" in err and str(path) in err
    assert main(["run", str(tmp_path / "missing.toml"), "--out", str(tmp_path / "o")]) == 2
    assert "missing.toml" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_tiny_model_is_deterministic_and_idempotent(tmp_path: Path, capsys) -> None:
    assert main(["tiny-model", str(tmp_path / "a")]) == 0
    assert main(["tiny-model", str(tmp_path / "b")]) == 0
    a = (tmp_path / "a" / "model.safetensors").read_bytes()
    assert a == (tmp_path / "b" / "model.safetensors").read_bytes()
    assert (tmp_path / "a" / "tokenizer.json").read_bytes() == (
        tmp_path / "b" / "tokenizer.json"
    ).read_bytes()
    before = (tmp_path / "a" / "model.safetensors").stat().st_mtime_ns
    assert main(["tiny-model", str(tmp_path / "a")]) == 0
    assert (tmp_path / "a" / "model.safetensors").stat().st_mtime_ns == before
    config = json.loads((tmp_path / "a" / "config.json").read_text())
    assert config["hidden_size"] == 128 and config["num_key_value_heads"] == 1
    assert config["tie_word_embeddings"] is True and config["vocab_size"] == 512


def test_chat_template_rendering(tiny_model_dir: Path) -> None:
    from transformers import AutoTokenizer

    from engine.config.sweep import validate
    from engine.generate.backends.base import render_prompts
    from engine.generate.units import plan_units

    raw = make_raw_spec(prompts=[{"id": "p", "template": "Q: {question}", "system": "Be brief."}])
    unit = plan_units(validate(raw))[0]
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    chat = render_prompts(unit, tokenizer, chat=True)[0]
    assert chat == f"system: Be brief.\nuser: Q: {unit.questions[0]}\nassistant:"
    plain = render_prompts(unit, tokenizer, chat=False)[0]
    assert plain == f"Be brief.\n\nQ: {unit.questions[0]}"


def test_the_cli_sets_up_one_log_handler_for_the_library(capsys) -> None:
    import logging

    from engine.cli.main import setup_logging

    setup_logging()
    setup_logging()  # again (main runs many times in one test process): still one handler
    logging.getLogger("engine.score.stage").info("score: markers already done (skipped)")
    logging.getLogger("engine.score.stage").debug("not shown at INFO")
    err = capsys.readouterr().err
    assert err == "score: markers already done (skipped)\n"
