"""The engine's `mic` subcommands: plan, tiny-model, bad input exits 2 (fast, no engine)."""

from __future__ import annotations

import json
from pathlib import Path

from helpers import REPO
from helpers.engine_helpers import make_raw_spec, write_toml

from engine.cli import main
from engine.config.sweep import load_spec


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


def test_plan_gives_gpu_hours_by_size_and_api_tokens_and_cost(capsys, tmp_path: Path) -> None:
    from engine.generate.estimate import estimate_open_model, model_size_b

    api = {
        "name": "api",
        "path": "some-model",
        "backend": "openai",
        "base_url": "https://api.example.com/v1",
        "price_in": 2.0,
        "price_out": 10.0,
    }
    local = {"name": "tiny", "path": "builtin:tiny", "replicas": 2, "params_b": 8.0}
    path = write_toml(tmp_path / "plan.toml", make_raw_spec(models=[local, api]))
    assert main(["plan", str(path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    tiny, remote = report["models"]["tiny"], report["models"]["api"]
    tokens = 60 * 2 * 8  # 60 items x n = 2 x max_tokens = 8
    assert tiny["max_generated_tokens"] == remote["max_generated_tokens"] == tokens
    assert tiny["gpu_hours_estimate"] == tokens / 10_000 / 3600  # 80,000 / 8B tokens/s per GPU
    assert tiny["wall_hours_estimate"] == tiny["gpu_hours_estimate"] / 2
    a = remote["api"]
    assert remote["gpu_hours_estimate"] == 0 and remote["gpus_per_replica"] == 0
    assert a["requests"] == 60 and a["max_completion_tokens"] == tokens
    assert a["prompt_tokens_estimate"] > 0
    assert a["cost_usd_max"] == (a["prompt_tokens_estimate"] * 2.0 + tokens * 10.0) / 1e6
    assert report["totals"]["api_cost_usd_max"] == a["cost_usd_max"]
    assert main(["plan", str(path)]) == 0
    text = capsys.readouterr().out
    assert "API models" in text and "80,000 / parameters" in text and "GPU-h" in text
    # A measured rate replaces the size rule; sizes come from names when not given.
    spec = load_spec(path)
    assert estimate_open_model(spec.models[0], 7200, 2.0)["gpu_hours_estimate"] == 1.0
    named = spec.models[0].__class__(name="x", path="meta-llama/Llama-3.1-70B-Instruct")
    assert model_size_b(named) == 70.0


def test_plan_simulates_the_open_models_makespan_on_one_node(capsys, tmp_path: Path) -> None:
    # Two 8B models of 2 replicas each on an 8-GPU node: one after another, 4 GPUs stay idle
    # all along (busy share at most 1/2); side by side with extra replicas the node fills.
    models = [
        {"name": n, "path": "builtin:tiny", "replicas": 2, "params_b": 8.0} for n in ("a", "b")
    ]
    raw = make_raw_spec(models=models)
    raw["sampling"]["max_tokens"] = 2048
    path = write_toml(tmp_path / "two.toml", raw)
    assert main(["plan", str(path), "--json"]) == 0
    sim = json.loads(capsys.readouterr().out)["makespan"]
    assert sim["node_gpus"] == 8 and sim["models"] == ["a", "b"]
    assert sim["sequential_busy_share"] <= 0.5 + 1e-9
    assert sim["fill_hours"] < sim["sequential_hours"]
    assert sim["fill_busy_share"] > sim["sequential_busy_share"]
    assert main(["plan", str(path), "--node-gpus", "4"]) == 0
    assert "simulated on one 4-GPU node" in capsys.readouterr().out
    assert main(["plan", str(path), "--node-gpus", "0"]) == 2
    assert "--node-gpus" in capsys.readouterr().err


def test_run_of_an_api_model_without_its_key_exits_2_naming_the_variable(
    capsys, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.delenv("MIC_UNSET_KEY", raising=False)
    api = {
        "name": "api",
        "path": "some-model",
        "backend": "openai",
        "base_url": "http://127.0.0.1:9/v1",
        "api_key_env": "MIC_UNSET_KEY",
    }
    path = write_toml(tmp_path / "api.toml", make_raw_spec(models=[api]))
    assert main(["run", str(path), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "$MIC_UNSET_KEY is not set" in err and "models.0 (api)" in err


def test_run_schedule_flag_reaches_the_driver(tmp_path: Path) -> None:
    # `mic run --schedule sequential` (real CLI, driver and Ray; fake engine): summary.json
    # records the order it ran in; a schedule that does not exist is refused by the parser.
    import pytest
    from helpers.reliability_helpers import fake_driver, fake_raw_spec

    spec = write_toml(tmp_path / "s.toml", fake_raw_spec(tmp_path, chunk_size=64))
    driver = fake_driver(spec, tmp_path / "out", "--schedule", "sequential", "--quiet")
    output = driver.communicate(timeout=600)[0].decode()
    assert driver.returncode == 0, output[-3000:]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["schedule"]["schedule"] == "sequential"
    with pytest.raises(SystemExit) as info:
        main(["run", str(spec), "--out", str(tmp_path / "o2"), "--schedule", "random"])
    assert info.value.code == 2
