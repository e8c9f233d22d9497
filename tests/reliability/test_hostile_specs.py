"""Hostile specs and task files through the real CLI (`python -m engine.cli` in a subprocess).

Three categories, every input built here by code:

1. names that become paths (task, model, prompt, run names; a tampered run.json hash under
   `--new-run`): mapped to safe file names under `--out` or refused on one line;
2. YAML alias cycles, alias bombs and absurd nesting (TOML too): refused on one line, quickly
   (the subprocess timeout stands in for the hang they used to cause);
3. task JSONL values that used to be dropped, stringified or raised: one line naming the file,
   the line and the field (an unusual split name is printed, not dropped silently).

Every case asserts the exit code, the stderr line and that no file outside the output directory
changed (the whole temp folder is snapshotted before and after).

    PYTHONPATH=$PWD python -m pytest -q -p no:cacheprovider tests/reliability/test_hostile_specs.py
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers.hostile import MicResult, assert_one_line, outside, run_mic
from helpers.reliability_helpers import (
    fake_driver,
    fake_raw_spec,
    write_run_without_ray,
    write_toml,
)


def base_spec(**sections: Any) -> dict[str, Any]:
    """A tiny sweep spec (built-in task and model); keyword sections replace the defaults."""
    raw: dict[str, Any] = {
        "run": {"name": "hostile", "chunk_size": 8},
        "models": [{"name": "m", "path": "builtin:tiny"}],
        "tasks": [{"name": "arith", "source": "builtin:arithmetic", "splits": ["train"]}],
        "prompts": [{"id": "plain", "template": "Q: {question}\nA:"}],
        "sampling": {"n": 1, "max_tokens": 4},
    }
    raw.update(sections)
    return raw


def write_yaml(path: Path, raw: dict[str, Any]) -> Path:
    """Write a spec as YAML (safe_dump escapes control characters, so any name can be written)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(raw, allow_unicode=False, sort_keys=False))
    return path


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """The watched folder; specs live in `root/spec/`, outputs go to `root/out`."""
    (tmp_path / "spec").mkdir()
    # A file where an escaping task name would land: it must survive untouched.
    (tmp_path / "x.jsonl").write_text("someone else's file\n")
    return tmp_path


def plan(root: Path, spec: Path, *extra: str) -> MicResult:
    """`mic plan SPEC` (writes nothing at all)."""
    return run_mic(["plan", str(spec), *extra], root, cwd=root / "spec")


def study_plan(root: Path, spec: Path) -> MicResult:
    """`mic study SPEC --out root/out --plan` (prepares the tasks into out/tasks)."""
    return run_mic(["study", str(spec), "--out", str(root / "out"), "--plan"], root, root / "spec")


# ------------------------------------------------------------------ 1. names that become paths

# Task names a study turns into `out/tasks/<name>.jsonl`: each must land inside out/tasks.
STUDY_TASK_NAMES = {
    "parent_parent": "../../x",
    "parent_only": "..",
    "absolute": "<root>/x",
    "slashes": "a/b/c",
    "backslashes": "..\\..\\x",
    "hidden": ".hidden",
    "spaces_unicode": "fakten über Städte",
}


@pytest.mark.parametrize("case", sorted(STUDY_TASK_NAMES))
def test_study_task_names_stay_inside_out(case: str, root: Path) -> None:
    name = STUDY_TASK_NAMES[case].replace("<root>", str(root))
    task = {"name": name, "source": "sample:sample_facts"}
    spec = write_toml(root / "spec" / "s.toml", base_spec(tasks=[task]))
    result = study_plan(root, spec)
    assert result.code == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert not outside(result, root, root / "out"), result.changed
    files = sorted(p.name for p in (root / "out" / "tasks").glob("*.jsonl"))
    assert len(files) == 1 and "/" not in files[0] and not files[0].startswith(".")
    assert name in result.stdout  # the rows keep the name as written


def test_distinct_task_names_get_distinct_files(root: Path) -> None:
    """`a/b` maps to a hashed file name, so it cannot collide with a task named `a_b`."""
    tasks = [
        {"name": "a/b", "source": "sample:sample_facts"},
        {"name": "a_b", "source": "sample:sample_yesno"},
    ]
    result = study_plan(root, write_toml(root / "spec" / "s.toml", base_spec(tasks=tasks)))
    assert result.code == 0, result.stderr
    assert not outside(result, root, root / "out")
    assert len(list((root / "out" / "tasks").glob("*.jsonl"))) == 2


@pytest.mark.parametrize("damage", ["[1,", "[1, 2]", '{"entry": "../../x"}'])
def test_damaged_task_sidecar_is_prepared_again(damage: str, root: Path) -> None:
    """A study's `tasks/<name>.source.json` that is not a readable record is not trusted: the
    task is prepared again (inside out/tasks), with no traceback."""
    task = {"name": "../facts", "source": "sample:sample_facts"}
    spec = write_toml(root / "spec" / "s.toml", base_spec(tasks=[task]))
    assert study_plan(root, spec).code == 0
    (sidecar,) = (root / "out" / "tasks").glob("*.source.json")
    sidecar.write_text(damage)
    result = study_plan(root, spec)
    assert result.code == 0, result.stderr
    assert "Traceback" not in result.stderr and "preparing task ../facts" in result.stderr
    assert not outside(result, root, root / "out"), result.changed
    assert json.loads(sidecar.read_text())["entry"]["source"] == "sample:sample_facts"


# (section entry, key, bad name): names nobody means are refused on one line naming the key.
BAD_NAMES = {
    "task_newline": ("tasks", "tasks.0.name", "arith\nrm -rf"),
    "task_nul": ("tasks", "tasks.0.name", "arith\x00"),
    "task_blank": ("tasks", "tasks.0.name", "   "),
    "model_escape_char": ("models", "models.0.name", "m\x1b[31m"),
    "prompt_tab": ("prompts", "prompts.0.id", "p\tq"),
    "run_nul": ("run", "run.name", "r\x00"),
    "task_too_long": ("tasks", "tasks.0.name", "t" * 300),
    "model_not_a_string": ("models", "models.0.name", 7),
}


@pytest.mark.parametrize("case", sorted(BAD_NAMES))
def test_unusable_names_are_refused(case: str, root: Path) -> None:
    section, key, value = BAD_NAMES[case]
    raw = base_spec()
    entry = raw[section] if section == "run" else raw[section][0]
    entry["id" if section == "prompts" else "name"] = value
    spec = write_yaml(root / "spec" / "s.yaml", raw)
    result = plan(root, spec)
    assert_one_line(result, key, str(spec))
    assert not result.changed


@pytest.mark.parametrize("command", ["plan", "study"])
def test_study_task_name_with_control_character_writes_nothing(command: str, root: Path) -> None:
    raw = base_spec(tasks=[{"name": "facts\n", "source": "sample:sample_facts"}])
    spec = write_yaml(root / "spec" / "s.yaml", raw)
    result = plan(root, spec) if command == "plan" else study_plan(root, spec)
    assert_one_line(result, "tasks.0.name", str(spec))
    assert not result.changed


def test_hub_style_names_keep_working(root: Path) -> None:
    """`org/model` names and paths (hub ids), prompt ids and run names with slashes or `..` are
    labels: they reach the plan unchanged and write nothing."""
    raw = base_spec(
        run={"name": "../../runs/r", "chunk_size": 8},
        models=[{"name": "meta-llama/Llama-3.1-8B", "path": "meta-llama/Llama-3.1-8B"}],
        prompts=[{"id": "../p/q", "template": "Q: {question}"}],
    )
    result = plan(root, write_toml(root / "spec" / "s.toml", raw), "--json")
    assert result.code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["run_id"].startswith("../../runs/r-")
    assert {u["model"] for u in report["units"]} == {"meta-llama/Llama-3.1-8B"}
    assert {u["prompt"] for u in report["units"]} == {"../p/q"}
    assert not result.changed


def _tampered_run(root: Path, stored_hash: object) -> tuple[Path, Path]:
    """A finished fake run four folders deep whose run.json hash is `stored_hash`, and a spec
    that differs from it (sampling.n = 3)."""
    out = root / "d1" / "d2" / "d3" / "run"
    raw = fake_raw_spec(out)
    write_run_without_ray(out, raw)
    record = json.loads((out / "run.json").read_text())
    record["hash"] = stored_hash
    (out / "run.json").write_text(json.dumps(record))
    raw["sampling"] = {**raw["sampling"], "n": 3}
    return out, write_toml(root / "spec" / "s.toml", raw)


def test_tampered_hash_without_new_run_is_refused(root: Path) -> None:
    out, spec = _tampered_run(root, "../../../../")
    result = run_mic(["run", str(spec), "--out", str(out)], root, root / "spec")
    assert_one_line(result, str(out), "--new-run")
    assert not result.changed


@pytest.mark.parametrize("stored_hash", ["../../../../", "/tmp", None, ["a"]])
def test_tampered_hash_under_new_run_stays_inside(
    stored_hash: object, root: Path, ray_address: str
) -> None:
    """`--new-run` moves the old run to superseded/<hex>, never to a path the record names."""
    out, spec = _tampered_run(root, stored_hash)
    before = {p.name for p in root.iterdir()}
    proc = fake_driver(spec, out, "--new-run", "--ray-address", ray_address)
    log = proc.communicate(timeout=300)[0].decode()
    assert proc.returncode == 0, log
    assert "Traceback" not in log
    assert {p.name for p in root.iterdir()} == before  # nothing moved up next to d1/
    assert (
        not (root / "d1" / "run.json").exists() and not (root / "d1" / "d2" / "run.json").exists()
    )
    superseded = [p.name for p in (out / "superseded").iterdir()]
    assert superseded == ["unknown"], superseded
    assert (out / "superseded" / "unknown" / "run.json").is_file()


def test_done_record_naming_a_shard_outside_reads_as_missing(root: Path) -> None:
    """A done-record whose shard is `../../../../../x.jsonl` (root/x.jsonl, outside the run)
    makes that unit damaged in `mic verify`; nothing outside is read as a shard or changed."""
    out = root / "d1" / "d2" / "d3" / "run"
    write_run_without_ray(out, fake_raw_spec(out))
    record_path = sorted((out / "done").glob("*.json"))[0]
    record = json.loads(record_path.read_text())
    record["shard"] = "../../../../../x.jsonl"
    assert (out / "shards" / record["shard"]).resolve() == root / "x.jsonl"
    record_path.write_text(json.dumps(record))
    result = run_mic(["verify", str(out), "--json"], root)
    assert result.code == 1, result.stderr
    assert "Traceback" not in result.stderr
    unit = record_path.stem
    states = {u["unit_id"]: u["state"] for u in json.loads(result.stdout)["units"]}
    # The record names no shard of its own unit: a damaged record, never a read of x.jsonl.
    assert states[unit] == "bad_record", states[unit]
    assert not result.changed


# ------------------------------------------------------------------ 2. YAML aliases, nesting

GOOD_TAIL = """\
models:
  - {name: m, path: "builtin:tiny"}
tasks:
  - {name: arith, source: "builtin:arithmetic", splits: [train]}
prompts:
  - {id: plain, template: "Q: {question}"}
"""


def _laughs(depth: int = 9, width: int = 9, indent: str = "  ") -> str:
    """Billion-laughs anchors a0..a<depth-1> (each level `width` aliases of the one below)."""
    lines = [f"{indent}a0: &a0 [{', '.join(['lol'] * width)}]"]
    for i in range(1, depth):
        lines.append(f"{indent}a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]")
    return "\n".join(lines)


YAML_CASES = {
    # name: (spec text, words in the one-line error)
    "self_alias_engine_args": (
        "run: {name: r}\nmodels:\n  - name: m\n    path: builtin:tiny\n"
        "    engine_args: &a {x: *a}\n"
        "tasks: [{name: t, source: 'builtin:arithmetic'}]\nprompts: [{id: p, template: '{question}'}]\n",
        ["models.0.engine_args.x", "cycle"],
    ),
    "self_alias_list_in_judges": (
        "judges:\n  x: &l [1, *l]\n" + GOOD_TAIL,
        ["judges.x.1", "cycle"],
    ),
    "self_merge_key_in_run": ("run: &r {name: r, <<: *r}\n" + GOOD_TAIL, ["run", "cycle"]),
    "mutual_aliases": (
        "analysis:\n  a: &a {b: &b {a: *a}}\n" + GOOD_TAIL,
        ["analysis.a.b.a", "cycle"],
    ),
    "laughs_in_judges": ("judges:\n" + _laughs() + "\n" + GOOD_TAIL, ["judges", "alias bomb"]),
    "laughs_in_sampling_stop": (
        "x_anchors: &top\n" + _laughs() + "\nsampling: {stop: *top}\n" + GOOD_TAIL,
        ["alias bomb"],
    ),
    "laughs_as_mapping_keys": (
        "analysis:\n" + _laughs(indent="  ") + "\n  ? *a8\n  : 1\n" + GOOD_TAIL,
        ["alias bomb"],
    ),
    "deep_nesting_yaml": ("judges: " + "[" * 3000 + "]" * 3000 + "\n" + GOOD_TAIL, ["nested"]),
    "nesting_past_limit_yaml": ("judges: " + "[" * 80 + "]" * 80 + "\n" + GOOD_TAIL, ["nested"]),
}


@pytest.mark.parametrize("case", sorted(YAML_CASES))
@pytest.mark.parametrize("command", ["plan", "study --plan", "run"])
def test_yaml_alias_cycles_and_bombs_are_refused(case: str, command: str, root: Path) -> None:
    text, needles = YAML_CASES[case]
    spec = root / "spec" / "s.yaml"
    spec.write_text(text)
    out = root / "out"
    argv = {
        "plan": ["plan", str(spec)],
        "study --plan": ["study", str(spec), "--out", str(out), "--plan"],
        "run": ["run", str(spec), "--out", str(out)],
    }[command]
    result = run_mic(argv, root, root / "spec")  # a hang fails on the subprocess timeout
    assert_one_line(result, str(spec), *needles)
    assert not result.changed


def test_deep_toml_is_refused(root: Path) -> None:
    spec = root / "spec" / "s.toml"
    spec.write_text("[analysis]\nx = " + "[" * 2000 + "]" * 2000 + "\n")
    assert_one_line(plan(root, spec), str(spec), "nested")


def test_deep_override_value_is_text_not_a_crash(root: Path) -> None:
    spec = write_toml(root / "spec" / "s.toml", base_spec())
    result = plan(root, spec, "--set", "run.name=" + "[" * 3000 + "]" * 3000)
    assert_one_line(result, "run.name")  # read as text, then refused as too long a name


def test_shared_alias_is_copied_before_overrides(root: Path) -> None:
    """A legitimate alias (engine_args shared by two models) still works, and an override of
    one model's copy leaves the other model's units (their ids hash engine_args) unchanged."""
    spec = root / "spec" / "s.yaml"
    spec.write_text(
        "models:\n  - {name: a, path: 'builtin:tiny', engine_args: &ea {dtype: float32}}\n"
        "  - {name: b, path: 'builtin:tiny', engine_args: *ea}\n"
        "tasks: [{name: t, source: 'builtin:arithmetic', splits: [train]}]\n"
        "prompts: [{id: p, template: '{question}'}]\n"
    )

    def unit_ids(*extra: str) -> dict[str, set[str]]:
        result = plan(root, spec, "--json", *extra)
        assert result.code == 0, result.stderr
        units = json.loads(result.stdout)["units"]
        return {m: {u["unit_id"] for u in units if u["model"] == m} for m in ("a", "b")}

    plain, changed = unit_ids(), unit_ids("--set", "models.a.engine_args.dtype=bfloat16")
    assert changed["a"] != plain["a"]
    assert changed["b"] == plain["b"]


# ------------------------------------------------------------------ 3. task JSONL

GOOD_ROW = {"id": "ok", "question": "What is 1 + 1?", "answers": ["2"], "split": "train"}

# name: (first line of the file, as raw JSON text; words in the error; exit code)
JSONL_CASES = {
    "split_case": (
        '{"id": "a", "question": "q", "answers": ["x"], "split": "Train"}',
        ["'split'", "'Train'", "case"],
        2,
    ),
    "split_spaces": (
        '{"id": "a", "question": "q", "answers": ["x"], "split": " train "}',
        ["'split'", "case or spaces"],
        2,
    ),
    "split_number": (
        '{"id": "a", "question": "q", "answers": ["x"], "split": 1}',
        ["'split'", "not a string"],
        2,
    ),
    "question_null": (
        '{"id": "a", "question": null, "answers": ["x"], "split": "train"}',
        ["'question'", "null"],
        2,
    ),
    "question_blank": (
        '{"id": "a", "question": "  ", "answers": ["x"], "split": "train"}',
        ["'question'", "blank"],
        2,
    ),
    "question_list": (
        '{"id": "a", "question": ["q"], "answers": ["x"], "split": "train"}',
        ["'question'"],
        2,
    ),
    "id_null": (
        '{"id": null, "question": "q", "answers": ["x"], "split": "train"}',
        ["'id'", "null"],
        2,
    ),
    "id_object": (
        '{"id": {"k": 1}, "question": "q", "answers": ["x"], "split": "train"}',
        ["'id'"],
        2,
    ),
    "answers_null": (
        '{"id": "a", "question": "q", "answers": null, "split": "train"}',
        ["'answers'", "null"],
        2,
    ),
    "answers_object": (
        '{"id": "a", "question": "q", "answers": {"a": 1}, "split": "train"}',
        ["'answers'"],
        2,
    ),
    "answers_bool": (
        '{"id": "a", "question": "q", "answers": true, "split": "train"}',
        ["'answers'"],
        2,
    ),
    "answers_nested": (
        '{"id": "a", "question": "q", "answers": [["x"]], "split": "train"}',
        ["'answers'"],
        2,
    ),
    "surrogate_question": (
        '{"id": "a", "question": "q\\ud800", "answers": ["x"], "split": "train"}',
        ["'question'", "surrogate"],
        2,
    ),
    "surrogate_id": (
        '{"id": "\\udfff", "question": "q", "answers": ["x"], "split": "train"}',
        ["'id'", "surrogate"],
        2,
    ),
    "surrogate_answer": (
        '{"id": "a", "question": "q", "answers": ["x\\udc00"], "split": "train"}',
        ["'answers'", "surrogate"],
        2,
    ),
    "surrogate_nested": (
        '{"id": "a", "question": "q", "answers": ["x"], "split": "train", "m": {"k": ["\\ud800"]}}',
        ["'m'", "surrogate"],
        2,
    ),
    "surrogate_key": (
        '{"id": "a", "question": "q", "answers": ["x"], "split": "train", "\\ud800": 1}',
        ["surrogate"],
        2,
    ),
}


def _task_file(root: Path, first_line: str) -> Path:
    path = root / "spec" / "task.jsonl"
    path.write_text(first_line + "\n" + json.dumps(GOOD_ROW) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("case", sorted(JSONL_CASES))
def test_task_jsonl_values_are_refused_with_line_and_field(case: str, root: Path) -> None:
    first, needles, code = JSONL_CASES[case]
    task_file = _task_file(root, first)
    task = {"name": "t", "source": "task.jsonl", "splits": ["train"]}
    spec = write_toml(root / "spec" / "s.toml", base_spec(tasks=[task]))
    result = plan(root, spec)
    assert_one_line(result, f"{task_file}:1", *needles, code=code)
    assert not result.changed


def test_unknown_split_is_printed_not_dropped_silently(root: Path) -> None:
    task_file = _task_file(root, '{"id": "a", "question": "q", "answers": ["x"], "split": "tset"}')
    task = {"name": "t", "source": "task.jsonl", "splits": ["train", "test"]}
    # A spec asking for train only: the one train row is planned, the "tset" row is reported.
    task["splits"] = ["train"]
    result = plan(root, write_toml(root / "spec" / "s.toml", base_spec(tasks=[task])), "--json")
    assert result.code == 0, result.stderr
    line = assert_one_line(result, f"{task_file}:1", "'tset'", "skipped", code=0)
    assert "tasks.t.splits" in line
    assert sum(u["items"] for u in json.loads(result.stdout)["units"]) == 1


def test_requested_split_left_out_on_purpose_is_silent(root: Path) -> None:
    """Items of a usual split the spec does not ask for (splits = ["train"] of a train/test file)
    are left out without a word: that is what `splits` is for."""
    _task_file(root, '{"id": "a", "question": "q", "answers": ["x"], "split": "test"}')
    task = {"name": "t", "source": "task.jsonl", "splits": ["train"]}
    result = plan(root, write_toml(root / "spec" / "s.toml", base_spec(tasks=[task])))
    assert result.code == 0 and result.stderr == "", result.stderr


def test_surrogate_pair_is_a_character_not_an_error(root: Path) -> None:
    _task_file(
        root, '{"id": "a", "question": "q \\ud83d\\ude00", "answers": ["x"], "split": "train"}'
    )
    task = {"name": "t", "source": "task.jsonl", "splits": ["train"]}
    result = plan(root, write_toml(root / "spec" / "s.toml", base_spec(tasks=[task])))
    assert result.code == 0, result.stderr


# Registry tasks read from a local hub export: a row the task's builder cannot read.
POPQA_ROWS = {
    "answers_number": {"possible_answers": 6},
    "answers_null": {"possible_answers": None},
    "answers_not_json": {"possible_answers": "[not json"},
    "question_null": {"question": None},
    "question_missing": {"question": "<drop>"},
}


@pytest.mark.parametrize("case", sorted(POPQA_ROWS))
def test_hub_export_rows_are_refused_with_line(case: str, root: Path) -> None:
    row = {
        "id": "a",
        "question": "Who directed X?",
        "possible_answers": '["Someone"]',
        "prop": "director",
        "obj": "X film",
    }
    row.update(POPQA_ROWS[case])
    row = {k: v for k, v in row.items() if v != "<drop>"}
    good = {**row, "id": "b", "question": "Who directed Y?", "possible_answers": '["Other"]'}
    export = root / "spec" / "popqa.jsonl"
    export.write_text(json.dumps(good) + "\n" + json.dumps(row) + "\n")
    task = {"name": "pop", "source": "registry:popqa", "path": str(export)}
    spec = write_toml(root / "spec" / "s.toml", base_spec(tasks=[task]))
    result = plan(root, spec)
    err = [x for x in result.stderr.splitlines() if not x.startswith("study: preparing")]
    assert result.code == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert len(err) == 1 and f"{export}:2" in err[0] and "popqa" in err[0], result.stderr
    assert not result.changed
