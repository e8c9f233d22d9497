"""Sweep spec validation, overrides, canonical hashing and unit planning (fast, no engine)."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import REPO
from helpers.engine_helpers import make_raw_spec, write_toml

from engine.config.sweep import apply_overrides, load_spec, validate
from engine.errors import UserError
from engine.generate.units import plan_units
from engine.tasks.builtin import builtin_task_names
from engine.tasks.loaders import load_items


def test_tiny_config_validates_and_plans() -> None:
    spec = load_spec(REPO / "configs" / "tiny.toml")
    assert spec.sampling.n == 4 and spec.sampling.logprobs == 5
    assert [t.name for t in spec.tasks] == ["arithmetic", "yesno"]
    units = plan_units(spec)
    assert sum(len(u.item_ids) for u in units) >= 200
    assert len({u.unit_id for u in units}) == len(units)


def test_builtin_tasks_have_the_documented_rows() -> None:
    names = builtin_task_names()
    assert {"arithmetic", "yesno"} <= set(names)
    spec = validate(make_raw_spec())
    total = 0
    for name in names:
        task = spec.tasks[0].__class__(name=name, source=f"builtin:{name}")
        by_split = load_items(task)
        total += sum(len(v) for v in by_split.values())
        assert by_split["train"] and by_split["test"]
        for item in by_split["train"]:
            assert item.item_id and item.question and item.answers
    assert total >= 200


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"bogus": 1}, "bogus"),
        ({"sampling": {"n": "four"}}, "sampling.n"),
        ({"sampling": {"n": 0}}, "sampling.n"),
        ({"sampling": {"max_tokens": -5}}, "sampling.max_tokens"),
        ({"sampling": {"temperature": -1.0}}, "sampling.temperature"),
        ({"sampling": {"top_p": 1.5}}, "sampling.top_p"),
        ({"sampling": {"logprobs": True}}, "sampling.logprobs"),
        ({"sampling": {"nn": 3}}, "sampling.nn"),
        ({"run": {"chunk_size": 0}}, "run.chunk_size"),
        ({"run": {"device": "tpu"}}, "run.device"),
        ({"models": [{"name": "m", "path": "/does/not/exist"}]}, "models.0.path"),
        ({"models": [{"name": "m"}]}, "models.0.path"),
        ({"models": [{"name": "m", "path": "builtin:huge"}]}, "models.0.path"),
        ({"models": [{"name": "m", "path": "builtin:tiny", "replicas": -1}]}, "models.0.replicas"),
        ({"tasks": [{"name": "t", "source": "missing.jsonl"}]}, "tasks.0.source"),
        ({"tasks": [{"name": "t", "source": "builtin:nope"}]}, "tasks.0.source"),
        ({"prompts": [{"id": "p", "template": "no placeholder"}]}, "prompts.0.template"),
        ({"prompts": []}, "prompts"),
    ],
)
def test_bad_spec_names_the_key_and_the_file(
    tmp_path: Path, change: dict[str, object], key: str
) -> None:
    path = write_toml(tmp_path / "bad.toml", make_raw_spec(**change))
    with pytest.raises(UserError) as info:
        load_spec(path)
    assert key in str(info.value)
    assert str(path) in str(info.value)


def test_yaml_spec_and_overrides(tmp_path: Path) -> None:
    import yaml

    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(make_raw_spec()))
    spec = load_spec(path, ["sampling.n=21", "models.tiny.replicas=3", "run.name=other"])
    assert spec.sampling.n == 21
    assert spec.models[0].replicas == 3
    assert spec.run.name == "other"
    with pytest.raises(UserError, match="sampling.n"):
        load_spec(path, ["sampling.n=-2"])
    with pytest.raises(UserError, match="models.nope"):
        load_spec(path, ["models.nope.replicas=2"])
    with pytest.raises(UserError, match="key=value"):
        apply_overrides({}, ["novalue"])


def test_hash_ignores_execution_fields_only() -> None:
    base = validate(make_raw_spec())
    more_actors = validate(apply_overrides(make_raw_spec(), ["models.0.replicas=4"]))
    other_seed = validate(apply_overrides(make_raw_spec(), ["sampling.seed=8"]))
    assert base.hash == more_actors.hash
    assert base.hash != other_seed.hash
    assert [u.unit_id for u in plan_units(base)] == [u.unit_id for u in plan_units(more_actors)]


def test_units_and_seeds_do_not_depend_on_chunking() -> None:
    small = plan_units(validate(apply_overrides(make_raw_spec(), ["run.chunk_size=7"])))
    large = plan_units(validate(apply_overrides(make_raw_spec(), ["run.chunk_size=50"])))
    seeds_small = {i: s for u in small for i, s in zip(u.item_ids, u.seeds)}
    seeds_large = {i: s for u in large for i, s in zip(u.item_ids, u.seeds)}
    assert seeds_small == seeds_large
    assert sum(len(u.item_ids) for u in small) == sum(len(u.item_ids) for u in large) == 60
    assert len(small) == 9 and len(large) == 2


def test_resources_refuse_gpus_that_do_not_exist() -> None:
    from engine.generate.runner import _actor_resources

    model = validate(make_raw_spec()).models[0]
    with pytest.raises(UserError, match="has none"):
        _actor_resources(model, "gpu", {"CPU": 2.0}, 0, 1)
    with pytest.raises(UserError, match="needs 3 replicas"):
        _actor_resources(model, "cpu", {"CPU": 2.0}, 0, 3)
    assert _actor_resources(model, "auto", {"CPU": 2.0}, 0, 2) == {"num_cpus": 1, "num_gpus": 0}
    assert _actor_resources(model, "auto", {"CPU": 8.0, "GPU": 2.0}, 0, 2)["num_gpus"] == 1


# ---- API models (backend = "openai") -------------------------------------------------------------

API_MODEL = {
    "name": "gpt",
    "path": "gpt-5-mini",
    "backend": "openai",
    "base_url": "https://api.example.com/v1",
    "api_key_env": "MY_KEY",
}


@pytest.mark.parametrize(
    ("change", "key", "fix"),
    [
        ({"backend": "anthropic"}, "models.0.backend", "'openai'"),
        ({"base_url": "api.example.com"}, "models.0.base_url", "http(s)"),
        ({"api_key_env": "sk-abc123"}, "models.0.api_key_env", "never write the key"),
        ({"tensor_parallel_size": 2}, "models.0.tensor_parallel_size", "no GPUs"),
        ({"path": "builtin:tiny"}, "models.0.path", "server serves"),
        ({"concurrency": 0}, "models.0.concurrency", ">= 1"),
        ({"price_out": -1.0}, "models.0.price_out", ">= 0"),
        ({"backend": "vllm", "path": "builtin:tiny"}, "models.0.base_url", 'backend = "openai"'),
    ],
)
def test_bad_api_model_gets_one_line(
    tmp_path: Path, change: dict[str, object], key: str, fix: str
) -> None:
    path = write_toml(tmp_path / "bad.toml", make_raw_spec(models=[{**API_MODEL, **change}]))
    with pytest.raises(UserError) as info:
        load_spec(path)
    text = str(info.value)
    assert key in text and str(path) in text and fix in text and "\n" not in text
    assert "sk-abc123" not in text  # a key pasted by mistake is not echoed


def test_api_model_keeps_vllm_hashes_and_hides_credentials() -> None:
    vllm_only = validate(make_raw_spec())
    assert set(vllm_only.content_dict()["models"][0]) == {
        "name",
        "path",
        "use_chat_template",
        "engine_args",
    }  # specs written before API models existed keep their hash and unit ids
    url = "https://user:pw-secret@api.example.com/v1?api_key=k-secret"
    with pytest.raises(UserError) as info:  # a spec is copied into the run: no secrets in it
        validate(make_raw_spec(models=[{**API_MODEL, "base_url": url}]), source="s.toml")
    text = str(info.value)
    assert "s.toml" in text and "models.0.base_url" in text and "api_key_env" in text
    assert "pw-secret" not in text and "k-secret" not in text
    raw = make_raw_spec(models=[{**API_MODEL, "price_in": 1.25}])
    spec = validate(raw)
    model = spec.models[0]
    assert model.is_api and model.path == "gpt-5-mini"  # a served name, not resolved as a path
    cheaper = validate(apply_overrides(raw, ["models.0.price_in=0.5", "models.0.concurrency=64"]))
    assert cheaper.hash == spec.hash  # prices and concurrency do not change the rows
    other = validate(apply_overrides(raw, ["models.0.path=gpt-5"]))
    assert other.hash != spec.hash
    from engine.generate.runner import _actor_resources

    assert _actor_resources(model, "gpu", {"CPU": 2.0, "GPU": 8.0}, 0, 2) == {
        "num_cpus": 1,
        "num_gpus": 0,
    }  # API actors never take a GPU


@pytest.mark.parametrize(
    "url",
    [
        "http://alice:pw-secret-5@judge.example/v1",
        "http://judge.example/v1?api_key=pw-secret-5",
        "http://pw-secret-5@judge.example/v1",
    ],
)
def test_judge_url_credentials_in_a_spec_are_refused(url: str) -> None:
    # run.json keeps the spec's [judges] table: a key written there would land on disk.
    with pytest.raises(UserError) as info:
        validate(make_raw_spec(judges={"base_url": url}), source="s.toml")
    text = str(info.value)
    assert "s.toml" in text and "judges.base_url" in text and "judges.api_key_env" in text
    assert "pw-secret-5" not in text
    plain = validate(make_raw_spec(judges={"base_url": "http://judge.example/v1"}))
    assert plain.to_dict()["judges"]["base_url"] == "http://judge.example/v1"


def test_task_names_differing_only_in_case_are_refused() -> None:
    # Task names become file names; on macOS and Windows "Math" and "math" are one file.
    tasks = [{**t, "name": n} for t, n in zip(make_raw_spec()["tasks"] * 2, ("Math", "math"))]
    with pytest.raises(UserError, match=r"tasks\.1\.name.*only in case"):
        validate(make_raw_spec(tasks=tasks), source="s.toml")


def test_chat_template_kwargs_are_checked_and_change_the_units_only_when_set(tmp_path) -> None:
    model = {"name": "tiny", "path": "builtin:tiny", "use_chat_template": True}
    plain = validate(make_raw_spec(models=[model]))
    # Empty (the default): the stored spec and the unit ids are those of a spec without the key,
    # so runs started before the field existed still resume.
    assert "chat_template_kwargs" not in plain.to_dict()["models"][0]
    off = {**model, "chat_template_kwargs": {"enable_thinking": False}}
    thinking_off = validate(make_raw_spec(models=[off]))
    assert thinking_off.to_dict()["models"][0]["chat_template_kwargs"] == {"enable_thinking": False}
    ids = {u.unit_id for u in plan_units(plain)}
    assert ids.isdisjoint(u.unit_id for u in plan_units(thinking_off))  # other prompts: other units
    # Through a TOML file, as users write it.
    spec = load_spec(write_toml(tmp_path / "s.toml", make_raw_spec(models=[off])))
    assert spec.models[0].chat_template_kwargs == {"enable_thinking": False}
    with pytest.raises(UserError, match="'models.0.chat_template_kwargs' is set but .*false"):
        validate(make_raw_spec(models=[{**off, "use_chat_template": False}]))
    with pytest.raises(UserError, match="'models.0.chat_template_kwargs' is .*expected a table"):
        validate(make_raw_spec(models=[{**model, "chat_template_kwargs": "enable_thinking"}]))
