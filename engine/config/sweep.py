"""The sweep spec: TOML (or YAML) validated into frozen dataclasses, with dotted overrides.

A spec names the models, tasks, prompts and sampling settings of a sweep.
Every user mistake (unknown key, wrong type, negative count, missing file) raises `UserError`
naming the file and the dotted key. Plain frozen dataclasses with a small validator are used
instead of pydantic because the surface is small and the core package does not depend on it.

Example::

    [run]
    name = "tiny"
    chunk_size = 64

    [[models]]
    name = "tiny"
    path = "builtin:tiny"

    [[tasks]]
    name = "arithmetic"
    source = "builtin:arithmetic"

    [[prompts]]
    id = "plain"
    template = "Question: {question}\\nAnswer:"

    [sampling]
    n = 4
    logprobs = 5
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import os
import re
import typing
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.errors import UserError, has_credentials, redact_url
from engine.tasks.builtin import PLANTED_TASK_NAMES, builtin_task_names
from engine.tasks.sources import BUILTIN_PREFIX, parse_source

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

# Built on first use by engine.generate.tiny_model (builtin:planted-* by engine.planted).
BUILTIN_MODEL_NAMES = (
    "builtin:tiny",
    "builtin:planted-faithful",
    "builtin:planted-unfaithful",
    "builtin:planted-judge",
)

# Generation backends a model can name: a vLLM engine in an actor, or an OpenAI-compatible server.
MODEL_BACKENDS = ("vllm", "openai")

# Model fields that only an API model (`backend = "openai"`) uses. They are left out of a vLLM
# model's stored spec, so specs written before API models existed keep their hash (and resume).
API_MODEL_FIELDS = (
    "base_url",
    "api_key_env",
    "concurrency",
    "max_retries",
    "timeout",
    "price_in",
    "price_out",
)

# Fields that say *how* a sweep runs, not *what* it computes: they may change between a run
# and its resume (a different GPU count or actor count, another endpoint of the same API model,
# new prices) without making it a different run.
EXECUTION_FIELDS = {
    "models": ("replicas", "tensor_parallel_size", "num_cpus", "params_b", *API_MODEL_FIELDS),
    "run": ("max_attempts", "device"),
}


@dataclass(frozen=True)
class RunSection:
    """Run-level settings.

    Attributes:
        name: Human name of the run (part of the run id).
        chunk_size: Items per work unit (one unit = model x task x split x prompt x chunk).
        max_attempts: How many times a unit is tried before the run fails.
        device: "auto" (GPUs when the Ray cluster has any, else CPUs), "gpu" or "cpu".
    """

    name: str = "run"
    chunk_size: int = 256
    max_attempts: int = 3
    device: str = "auto"


@dataclass(frozen=True)
class ModelSpec:
    """One model of the sweep.

    Attributes:
        name: Short id used in output rows.
        path: Hugging Face id, local directory, or `builtin:tiny`; for an API model, the model
            name the server serves (e.g. "gpt-5-mini").
        replicas: Actors (engine copies) for this model.
        tensor_parallel_size: GPUs per replica (on a GPU node).
        num_cpus: CPUs reserved per actor on a CPU-only node (API models: always CPUs only).
        use_chat_template: Render prompts with the tokenizer's chat template (API models: send
            system + user messages to `/chat/completions` instead of text to `/completions`).
        chat_template_kwargs: Extra variables for the chat template, e.g.
            `{ enable_thinking = false }` for a hybrid-reasoning model (Qwen3) whose template
            turns thinking on by default; API models send them as the request's
            `chat_template_kwargs` (vLLM's OpenAI-compatible server applies them). Needs
            `use_chat_template = true`.
        engine_args: Extra keyword arguments for `vllm.LLM` (e.g. max_model_len, dtype); for an
            API model, extra fields of every request body (e.g. reasoning_effort).
        backend: "vllm" (an engine in each actor) or "openai" (an OpenAI-compatible server).
        base_url: The API model's server, e.g. "https://api.openai.com/v1".
        api_key_env: Environment variable holding the API key ("" = send none); the key itself
            is never stored or logged.
        concurrency: Requests in flight per actor at most (API models).
        max_retries: Retries per request (API models; backoff honours Retry-After and
            rate-limit headers).
        timeout: Seconds per request (API models).
        price_in: USD per 1M prompt tokens, for the cost account (API models; 0 = unknown).
        price_out: USD per 1M completion tokens (API models; 0 = unknown).
        params_b: Parameters in billions for `mic plan`'s GPU-hour estimate (0 = read from
            the name, e.g. "8B").
    """

    name: str
    path: str
    replicas: int = 1
    tensor_parallel_size: int = 1
    num_cpus: int = 1
    use_chat_template: bool = False
    chat_template_kwargs: dict[str, Any] = field(default_factory=dict)
    engine_args: dict[str, Any] = field(default_factory=dict)
    backend: str = "vllm"
    base_url: str = ""
    api_key_env: str = "OPENAI_API_KEY"
    concurrency: int = 16
    max_retries: int = 5
    timeout: float = 300.0
    price_in: float = 0.0
    price_out: float = 0.0
    params_b: float = 0.0

    @property
    def is_api(self) -> bool:
        """Whether the model is served by an OpenAI-compatible server (no GPU, no engine)."""
        return self.backend == "openai"


@dataclass(frozen=True)
class SweepTask:
    """One task (question set) of a sweep.

    Attributes:
        name: Short id used in output rows.
        source: `builtin:<name>` or a local JSONL file with id / question / answers / split.
        splits: Splits to generate for.
        limit: At most this many items per split (0 = all).
        id_column: Column holding the item id.
        question_column: Column holding the question text.
        split_column: Column holding the split name.
    """

    name: str
    source: str
    splits: tuple[str, ...] = ("train", "test")
    limit: int = 0
    id_column: str = "id"
    question_column: str = "question"
    split_column: str = "split"


@dataclass(frozen=True)
class PromptSpec:
    """One prompt: a template with a `{question}` placeholder and an optional system text.

    Attributes:
        id: Short id used in output rows.
        template: Text with `{question}`.
        system: System text (prepended as plain text, or as the system turn with chat templates).
    """

    id: str
    template: str
    system: str = ""


@dataclass(frozen=True)
class SamplingSpec:
    """Sampling settings shared by every model of the sweep.

    Attributes:
        n: Samples per item (sample 0 is the response, the rest consistency samples).
        temperature: Sampling temperature (0 = greedy).
        top_p: Nucleus sampling mass in (0, 1].
        max_tokens: Generated tokens per sample at most.
        logprobs: Top-k alternatives stored per generated token (0 = only the chosen token).
        seed: Base seed; every (task, split, prompt, item, sample) gets its own derived seed.
        stop: Stop strings; the text is cut at the first one after decoding.
        seed_mode: Which samples carry a seed (see `SEED_MODES`): "per-sample" (every sample:
            tokens never depend on batching, chunking or actors), "per-request" (sample 0, the
            response, only; the other samples are fresh draws) or "none" (no sample: the
            engine's RNG, so tokens depend on what shares the batch).
    """

    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 64
    logprobs: int = 0
    seed: int = 0
    stop: tuple[str, ...] = ()
    seed_mode: str = "per-sample"


# What each seed mode promises; the resume guarantee (every (unit, item, sample) exactly once) holds
# in all three, since it rests on unit ids and done-records, not on the tokens.
SEED_MODES = {
    "per-sample": "every sample seeded: tokens independent of batching, chunking and actors",
    "per-request": "the response (sample 0) seeded; samples 1..n-1 are unseeded draws",
    "none": "no seeds: the engine's RNG, tokens depend on what shares the batch",
}
DEFAULT_SEED_MODE = "per-sample"


@dataclass(frozen=True)
class SweepSpec:
    """A validated sweep spec.

    Attributes:
        run: Run-level settings.
        models: Models to run.
        tasks: Tasks to run.
        prompts: Prompts to run.
        sampling: Sampling settings.
        judges: Judge settings (validated by the judge stages, kept verbatim here).
        analysis: Analysis settings (validated by `mic analyze`, kept verbatim here).
        source: The file the spec was read from ("" when built in memory).
    """

    run: RunSection
    models: tuple[ModelSpec, ...]
    tasks: tuple[SweepTask, ...]
    prompts: tuple[PromptSpec, ...]
    sampling: SamplingSpec
    judges: dict[str, Any] = field(default_factory=dict)
    analysis: dict[str, Any] = field(default_factory=dict)
    source: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Return the spec as plain JSON-able data (lists for tuples).

        A vLLM model leaves out the API-only fields, its default `params_b` and empty
        `chat_template_kwargs` (specs written before they existed keep their hash); an API
        model's base URL loses any credentials.
        """
        data = dataclasses.asdict(self)
        data.pop("source")
        judge_url = data["judges"].get("base_url")
        if isinstance(judge_url, str) and has_credentials(judge_url):
            # validate() refuses these; a spec built around it must not leak them either.
            data["judges"]["base_url"] = redact_url(judge_url)
        for model in data["models"]:
            if model.get("params_b") == 0.0:
                model.pop("params_b")
            if not model.get("chat_template_kwargs"):
                model.pop("chat_template_kwargs", None)
            if model["backend"] == "vllm":
                model.pop("backend")
                for name in API_MODEL_FIELDS:
                    model.pop(name, None)
            else:
                model["base_url"] = redact_url(model["base_url"])
        return json.loads(json.dumps(data))

    def portable_dict(self, base: str | os.PathLike[str] | None = None) -> dict[str, Any]:
        """Return `to_dict()` with local task files under `base` written relative to it.

        A study directory stores its prepared task files in `tasks/`; recording them relative
        to the directory keeps a moved or copied study usable (`validate(..., base_dir=DIR)`
        resolves them again).
        """
        data = self.to_dict()
        if base is not None:
            root = Path(base).resolve()
            for task in data["tasks"]:
                if task["source"].startswith(BUILTIN_PREFIX):
                    continue
                local = Path(task["source"])
                if local.is_relative_to(root):
                    task["source"] = local.relative_to(root).as_posix()
        return data

    def content_dict(self) -> dict[str, Any]:
        """Return what decides the generations: no execution fields (replicas, GPUs per
        replica, ...) and no judge / analysis settings.

        A local task file enters by its file name only: where the file lives does not decide the
        generations (its items do, through the unit ids), so a study that is moved or copied, or
        run from another working directory, keeps its identity.
        """
        data = self.to_dict()
        for task in data["tasks"]:
            if not task["source"].startswith(BUILTIN_PREFIX):
                task["source"] = "file:" + Path(task["source"]).name
        # Judge and analysis settings belong to later stages; they do not change generations.
        data.pop("judges", None)
        data.pop("analysis", None)
        data["sampling"] = sampling_content(data["sampling"])
        for section, names in EXECUTION_FIELDS.items():
            entries = data[section] if isinstance(data[section], list) else [data[section]]
            for entry in entries:
                for name in names:
                    entry.pop(name, None)
        return data

    def canonical_json(self) -> str:
        """Return the canonical JSON of the spec's content (sorted keys, no spaces)."""
        return canonical_json(self.content_dict())

    @property
    def hash(self) -> str:
        """Hex sha256 of the canonical JSON: two specs with equal hashes compute the same rows."""
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()

    @property
    def run_id(self) -> str:
        """Run id stored in every row: the run name and the first 12 hex digits of the hash."""
        return f"{self.run.name}-{self.hash[:12]}"


def sampling_content(sampling: dict[str, Any]) -> dict[str, Any]:
    """The sampling settings that decide the rows, as hashed into run and unit ids.

    The default seed mode is left out, so runs made before `seed_mode` existed keep their ids
    (and resume); any other mode makes a different run.
    """
    out = dict(sampling)
    if out.get("seed_mode") == DEFAULT_SEED_MODE:
        out.pop("seed_mode")
    return out


def canonical_json(data: Any) -> str:
    """Return `data` as canonical JSON (sorted keys, compact separators)."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


# ---- loading -----------------------------------------------------------------------------------

_SECTION_TYPES = {
    "run": RunSection,
    "models": ModelSpec,
    "tasks": SweepTask,
    "prompts": PromptSpec,
    "sampling": SamplingSpec,
}
_FREE_SECTIONS = ("judges", "analysis")

# Lower bounds checked after type checks; anything numeric not listed must be >= 0.
_MINIMUM = {
    "chunk_size": 1,
    "max_attempts": 1,
    "replicas": 1,
    "tensor_parallel_size": 1,
    "num_cpus": 1,
    "n": 1,
    "max_tokens": 1,
    "concurrency": 1,
    "timeout": 1,
}


def read_raw(path: str | Path) -> dict[str, Any]:
    """Read a TOML or YAML spec file into a dict.

    Args:
        path: The spec file (`.toml`, `.yaml` or `.yml`).

    Returns:
        The parsed document.

    Raises:
        UserError: The file is missing, has another extension, or does not parse.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(
            f"spec file {path} does not exist", "pass the path of a .toml or .yaml spec"
        )
    suffix = path.suffix.lower()
    try:
        if suffix == ".toml":
            with path.open("rb") as fh:
                data = tomllib.load(fh)
            _check_depth(data, str(path))
        elif suffix in (".yaml", ".yml"):
            with path.open("r", encoding="utf-8") as fh:
                data = load_yaml(fh, str(path)) or {}
        else:
            raise UserError(
                f"spec file {path} has extension '{suffix}'", "use a .toml, .yaml or .yml file"
            )
    except UserError:
        raise
    except RecursionError:  # nesting deeper than the parsers' recursion allows
        raise UserError(
            f"spec file {path} is nested too deeply to read", "a spec needs a few levels only"
        ) from None
    except Exception as exc:  # tomllib / yaml parse errors: one line, naming the file
        text = " ".join(str(exc).split())  # yaml's messages span lines: keep one
        raise UserError(f"spec file {path} does not parse: {text}", "fix the syntax") from None
    if not isinstance(data, dict):
        raise UserError(f"spec file {path} must hold a table at top level", "see configs/tiny.toml")
    return data


# A spec has tens to hundreds of values; YAML aliases may repeat a table (engine_args shared by
# models), but a document that expands past this many values is an alias bomb, not a spec.
MAX_SPEC_VALUES = 100_000
MAX_SPEC_DEPTH = 64


def load_yaml(stream: Any, source: str) -> Any:
    """Parse one YAML document with aliases checked before anything is built.

    PyYAML shares an aliased value instead of copying it, so a self-referencing alias builds a
    cyclic object (every later copy or dump recurses forever) and "billion laughs" aliases build
    a small graph that expands exponentially when copied or hashed. The node graph is therefore
    walked first: a cycle, more than `MAX_SPEC_VALUES` values once every alias is expanded, or
    nesting deeper than `MAX_SPEC_DEPTH` is refused. The document is returned as a plain tree
    (aliases copied), so `--set models.0.engine_args.x=...` changes that model only.

    Args:
        stream: The open file.
        source: The file, for messages.

    Returns:
        The document (dicts, lists, scalars), or None for an empty file.

    Raises:
        UserError: A cyclic alias, an alias bomb or too deep nesting (one line, naming the key).
    """
    import yaml

    class SpecLoader(yaml.SafeLoader):
        def get_single_data(self) -> Any:
            node = self.get_single_node()
            if node is None:
                return None
            _check_yaml_graph(node, source)
            return self.construct_document(node)

    return _plain_tree(yaml.load(stream, Loader=SpecLoader))  # noqa: S506 - a SafeLoader


def _check_yaml_graph(root: Any, source: str) -> None:
    """Refuse cycles, alias bombs and deep nesting in a composed YAML node graph."""
    import yaml

    sizes: dict[int, int] = {}  # node id -> values once expanded (memo: linear in the nodes)
    open_nodes: set[int] = set()

    def size(node: Any, path: tuple[str, ...]) -> int:
        key = id(node)
        where = ".".join(path) or "<top>"
        if key in sizes:
            return sizes[key]
        if key in open_nodes:
            raise UserError(
                f"spec file {source}: the YAML alias at '{where}' refers to a value that "
                "contains it (a cycle)",
                "write the value out instead of aliasing its own ancestor",
            )
        if len(path) > MAX_SPEC_DEPTH:
            raise UserError(
                f"spec file {source}: '{where[:80]}...' is nested more than {MAX_SPEC_DEPTH} "
                "levels deep",
                "a spec needs a few levels only",
            )
        open_nodes.add(key)
        total = 1
        if isinstance(node, yaml.MappingNode):
            children = []
            for key_node, value_node in node.value:  # a key may itself be an aliased table
                label = str(key_node.value) if isinstance(key_node, yaml.ScalarNode) else "<key>"
                children += [(label, key_node), (label, value_node)]
        elif isinstance(node, yaml.SequenceNode):
            children = [(str(i), c) for i, c in enumerate(node.value)]
        else:
            children = []
        for label, child in children:
            total += size(child, (*path, label))
            if total > MAX_SPEC_VALUES:
                raise UserError(
                    f"spec file {source}: YAML aliases expand '{where}' to more than "
                    f"{MAX_SPEC_VALUES:,} values (an alias bomb?)",
                    "write the values out, or alias fewer times",
                )
        open_nodes.discard(key)
        sizes[key] = total
        return total

    size(root, ())


def _check_depth(data: Any, source: str) -> None:
    """Refuse a parsed document nested deeper than `MAX_SPEC_DEPTH` (TOML has no aliases, but
    `a = [[[[...]]]]` hundreds deep would overflow every later copy of the spec)."""
    stack = [(data, 0)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_SPEC_DEPTH:
            raise UserError(
                f"spec file {source} is nested more than {MAX_SPEC_DEPTH} levels deep",
                "a spec needs a few levels only",
            )
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value)


def _plain_tree(value: Any) -> Any:
    """`value` with every shared (aliased) dict or list copied: a tree, as TOML gives."""
    if isinstance(value, dict):
        return {k: _plain_tree(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain_tree(v) for v in value]
    return value


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse one `--set a.b=c` override into its key path and value.

    The value is read as a TOML value (`21`, `0.5`, `true`, `["a", "b"]`, `"text"`); anything
    that does not parse as TOML is kept as a plain string.

    Args:
        text: The override, `dotted.key=value`.

    Returns:
        The key path and the parsed value.

    Raises:
        UserError: No `=` or an empty key.
    """
    key, sep, raw_value = text.partition("=")
    if not sep or not key.strip():
        raise UserError(f"override '{text}' is not key=value", "write e.g. --set sampling.n=21")
    try:
        value = tomllib.loads(f"v = {raw_value.strip()}")["v"]
    except (tomllib.TOMLDecodeError, RecursionError):  # not TOML (or absurdly nested): text
        value = raw_value.strip()
    return [part.strip() for part in key.split(".")], value


def apply_overrides(raw: dict[str, Any], overrides: list[str], source: str = "") -> dict[str, Any]:
    """Return a copy of `raw` with dotted overrides applied.

    List entries (models, tasks, prompts) are addressed by index (`models.0.replicas=2`) or by
    their name / id (`models.tiny.replicas=2`).

    Args:
        raw: The parsed spec document.
        overrides: `dotted.key=value` strings.
        source: The spec file, for error messages.

    Returns:
        The updated document.

    Raises:
        UserError: An override addresses a list entry that does not exist.
    """
    data = copy.deepcopy(raw)
    for text in overrides:
        keys, value = parse_override(text)
        node: Any = data
        for depth, key in enumerate(keys[:-1]):
            dotted = ".".join(keys[: depth + 1])
            if isinstance(node, list):
                node = _list_entry(node, key, dotted, source)
            else:
                if not isinstance(node.get(key, {}), dict | list):
                    raise UserError(f"{source}: override '{text}': '{dotted}' is not a table")
                node = node.setdefault(key, {})
        last = keys[-1]
        if isinstance(node, list):
            raise UserError(
                f"{source}: override '{text}' addresses a list entry, not a key",
                "name a key inside it, e.g. models.0.replicas=2",
            )
        node[last] = value
    return data


def _list_entry(entries: list[Any], key: str, dotted: str, source: str) -> Any:
    if key.isdigit() and int(key) < len(entries):
        return entries[int(key)]
    for entry in entries:
        if isinstance(entry, dict) and key in (entry.get("name"), entry.get("id")):
            return entry
    raise UserError(
        f"{source}: override key '{dotted}' matches no list entry",
        "use an index (models.0) or an existing name (models.tiny)",
    )


def load_spec(path: str | Path, overrides: list[str] | None = None) -> SweepSpec:
    """Read, override and validate a sweep spec file.

    Args:
        path: The spec file (TOML or YAML).
        overrides: `dotted.key=value` strings applied before validation.

    Returns:
        The validated spec. Relative task files and model directories are resolved against
        the spec file's directory.

    Raises:
        UserError: Any problem with the file, naming the key.
    """
    path = Path(path)
    raw = apply_overrides(read_raw(path), overrides or [], str(path))
    return validate(raw, source=str(path), base_dir=path.resolve().parent)


def validate(
    raw: dict[str, Any], source: str = "<spec>", base_dir: Path | None = None
) -> SweepSpec:
    """Validate a parsed spec document into a `SweepSpec`.

    Args:
        raw: The parsed document.
        source: Name of the file, for error messages.
        base_dir: Directory relative paths are resolved against (default: current directory).

    Returns:
        The validated spec.

    Raises:
        UserError: Unknown keys, wrong types, out-of-range values, missing sections or files.
    """
    base_dir = base_dir or Path.cwd()
    allowed = sorted([*_SECTION_TYPES, *_FREE_SECTIONS])
    for key in raw:
        if key not in _SECTION_TYPES and key not in _FREE_SECTIONS:
            raise UserError(f"{source}: unknown key '{key}'", f"allowed top-level keys: {allowed}")
    for key in ("models", "tasks", "prompts"):
        if not raw.get(key):
            raise UserError(
                f"{source}: missing '{key}'",
                f"add at least one [[{key}]] table (see configs/tiny.toml)",
            )
        if not isinstance(raw[key], list):
            raise UserError(
                f"{source}: '{key}' must be a list of tables", f"write [[{key}]] in TOML"
            )
    run = _build(RunSection, raw.get("run", {}), "run", source)
    sampling = _build(SamplingSpec, raw.get("sampling", {}), "sampling", source)
    models = tuple(
        _build(ModelSpec, entry, f"models.{i}", source) for i, entry in enumerate(raw["models"])
    )
    tasks = tuple(
        _build(SweepTask, entry, f"tasks.{i}", source) for i, entry in enumerate(raw["tasks"])
    )
    prompts = tuple(
        _build(PromptSpec, entry, f"prompts.{i}", source) for i, entry in enumerate(raw["prompts"])
    )
    for section in _FREE_SECTIONS:
        if not isinstance(raw.get(section, {}), dict):
            raise UserError(f"{source}: '{section}' must be a table")
    refuse_judge_url_credentials(raw.get("judges", {}), source)

    check_name(run.name, "run.name", source)
    for section, entries, attr in (("models", models, "name"), ("tasks", tasks, "name")):
        for i, entry in enumerate(entries):
            check_name(getattr(entry, attr), f"{section}.{i}.{attr}", source)
    for i, prompt in enumerate(prompts):
        check_name(prompt.id, f"prompts.{i}.id", source)
    _check_unique([m.name for m in models], "models", "name", source)
    _check_unique([t.name for t in tasks], "tasks", "name", source)
    _check_case_collisions([t.name for t in tasks], source)
    _check_unique([p.id for p in prompts], "prompts", "id", source)
    if run.device not in ("auto", "gpu", "cpu"):
        raise UserError(f"{source}: 'run.device' is {run.device!r}", 'use "auto", "gpu" or "cpu"')
    if sampling.seed_mode not in SEED_MODES:
        raise UserError(
            f"{source}: 'sampling.seed_mode' is {sampling.seed_mode!r}",
            f"use one of {', '.join(repr(m) for m in SEED_MODES)}",
        )
    if not 0.0 < sampling.top_p <= 1.0:
        raise UserError(f"{source}: 'sampling.top_p' is {sampling.top_p}", "use a value in (0, 1]")
    for i, prompt in enumerate(prompts):
        if "{question}" not in prompt.template:
            raise UserError(
                f"{source}: 'prompts.{i}.template' has no {{question}} placeholder",
                "put {question} where the question goes",
            )
        try:
            prompt.template.format(question="")
        except (KeyError, IndexError, ValueError) as exc:
            raise UserError(
                f"{source}: 'prompts.{i}.template' has a bad placeholder ({exc})",
                "only {question} is filled; write other braces as {{ and }}",
            ) from None
    for i, model in enumerate(models):
        _check_backend(model, f"models.{i}", source)
    models = tuple(
        m
        if m.is_api
        else dataclasses.replace(
            m, path=_resolve_model_path(m.path, f"models.{i}.path", source, base_dir)
        )
        for i, m in enumerate(models)
    )
    tasks = tuple(
        dataclasses.replace(
            t, source=_resolve_task_source(t.source, f"tasks.{i}.source", source, base_dir)
        )
        for i, t in enumerate(tasks)
    )
    return SweepSpec(
        run=run,
        models=models,
        tasks=tasks,
        prompts=prompts,
        sampling=sampling,
        judges=dict(raw.get("judges", {})),
        analysis=dict(raw.get("analysis", {})),
        source=source,
    )


MAX_NAME_LENGTH = 200


def check_name(value: object, key: str, source: str) -> str:
    """Check a name that labels output rows (run, model, task, prompt id) and may become a file.

    Any text is allowed (`org/model`, spaces, non-ASCII): where a name becomes a file it goes
    through `engine.contract.safe_file_name`. Refused are what no label means on purpose: a
    non-string, a blank name, control characters (a newline or NUL breaks every line-based
    listing), unpaired surrogates (not encodable as UTF-8) and names over 200 characters.

    Args:
        value: The name.
        key: Its dotted key (`tasks.0.name`), for the message.
        source: The spec file, for the message.

    Returns:
        The name.

    Raises:
        UserError: Naming the file, the key and the fix.
    """
    fix = "use a short name of letters, digits, '-', '_', '.' or '/'"
    if not isinstance(value, str):
        raise UserError(f"{source}: '{key}' is {value!r} ({type(value).__name__})", fix)
    if not value.strip():
        raise UserError(f"{source}: '{key}' is blank", fix)
    bad = next((c for c in value if unicodedata.category(c) in ("Cc", "Cs")), None)
    if bad is not None:
        raise UserError(f"{source}: '{key}' holds the control character {bad!r}", fix)
    if len(value) > MAX_NAME_LENGTH:
        raise UserError(
            f"{source}: '{key}' is {len(value)} characters long (at most {MAX_NAME_LENGTH})", fix
        )
    return value


def _check_unique(values: list[str], section: str, key: str, source: str) -> None:
    seen: set[str] = set()
    for i, value in enumerate(values):
        if value in seen:
            raise UserError(
                f"{source}: '{section}.{i}.{key}' repeats '{value}'",
                f"give each entry its own {key}",
            )
        seen.add(value)


def _check_case_collisions(names: list[str], source: str) -> None:
    """Refuse two task names whose files would be one file on a case-insensitive file system."""
    from engine.contract import safe_file_name

    seen: dict[str, str] = {}
    for i, name in enumerate(names):
        folded = safe_file_name(name).casefold()
        if folded in seen:
            raise UserError(
                f"{source}: 'tasks.{i}.name' {name!r} differs from {seen[folded]!r} only in case",
                "their files would be one file on macOS and Windows: rename one of them",
            )
        seen[folded] = name


def refuse_url_credentials(url: str, key: str, source: str) -> None:
    """Refuse credentials written into a spec's URL (`key`.base_url): a spec is copied into
    the run directory and printed by `--check`; keys belong in `key`.api_key_env's variable.

    Raises:
        UserError: `url` carries a user, password or secret-looking query value.
    """
    if has_credentials(url):
        raise UserError(
            f"{source}: '{key}.base_url' carries credentials ({redact_url(url)!r} plus "
            "a user, password or key)",
            f"remove them from the URL and put the key in the environment variable named by "
            f"{key}.api_key_env; a spec file is copied into the run directory",
        )


def refuse_judge_url_credentials(judges: Any, source: str) -> None:
    """`refuse_url_credentials` for a spec's `[judges]` table (sweep and study specs)."""
    if isinstance(judges, dict) and isinstance(judges.get("base_url"), str):
        refuse_url_credentials(judges["base_url"], "judges", source)


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _check_backend(model: ModelSpec, key: str, source: str) -> None:
    """Check a model's backend and the fields only API models may set."""
    if model.chat_template_kwargs and not model.use_chat_template:
        raise UserError(
            f"{source}: '{key}.chat_template_kwargs' is set but '{key}.use_chat_template' is "
            "false (the variables reach only a chat template)",
            f"set {key}.use_chat_template = true, or remove chat_template_kwargs",
        )
    if model.backend not in MODEL_BACKENDS:
        raise UserError(
            f"{source}: '{key}.backend' is {model.backend!r}",
            f"use one of {', '.join(repr(b) for b in MODEL_BACKENDS)}",
        )
    if not model.is_api:
        defaults = ModelSpec(name="", path="")
        for name in API_MODEL_FIELDS:
            if getattr(model, name) != getattr(defaults, name):
                raise UserError(
                    f"{source}: '{key}.{name}' is set but '{key}.backend' is \"vllm\"",
                    f'set {key}.backend = "openai" for an API model, or remove {name}',
                )
        return
    if not model.base_url.startswith(("http://", "https://")):
        raise UserError(
            f"{source}: '{key}.base_url' is {redact_url(model.base_url)!r}",
            "give the API's http(s) URL, e.g. https://api.openai.com/v1",
        )
    refuse_url_credentials(model.base_url, key, source)
    if model.api_key_env and not _ENV_NAME.fullmatch(model.api_key_env):
        raise UserError(
            f"{source}: '{key}.api_key_env' is not an environment variable name",
            "put the key in an environment variable and name the variable here "
            '(e.g. api_key_env = "OPENAI_API_KEY"); never write the key into a spec',
        )
    if model.tensor_parallel_size != 1:
        raise UserError(
            f"{source}: '{key}.tensor_parallel_size' is {model.tensor_parallel_size}",
            "an API model uses no GPUs: remove tensor_parallel_size",
        )
    if not model.path or model.path.startswith(BUILTIN_PREFIX):
        raise UserError(
            f"{source}: '{key}.path' is {model.path!r}",
            'give the model name the server serves, e.g. path = "gpt-5-mini"',
        )


def _resolve_model_path(path: str, key: str, source: str, base_dir: Path) -> str:
    if path.startswith(BUILTIN_PREFIX):
        if path not in BUILTIN_MODEL_NAMES:
            raise UserError(
                f"{source}: '{key}' names unknown model '{path}'",
                f"use one of {sorted(BUILTIN_MODEL_NAMES)}",
            )
        return path
    local = Path(path).expanduser()
    if not local.is_absolute():
        local = base_dir / local
    if local.exists():
        return str(local.resolve())
    looks_local = path.startswith((".", "/", "~")) or path.count("/") != 1
    if looks_local:
        raise UserError(
            f"{source}: '{key}' is {path!r}, which does not exist",
            "give an existing model directory, a Hugging Face id (org/name) or builtin:tiny",
        )
    return path  # a Hugging Face id, resolved by vLLM (from the local hub cache when offline)


def _resolve_task_source(task_source: str, key: str, source: str, base_dir: Path) -> str:
    kind, name = parse_source(task_source)
    if kind == "builtin":
        known = [*builtin_task_names(), *PLANTED_TASK_NAMES]
        if name not in known:
            raise UserError(
                f"{source}: '{key}' names unknown built-in task '{name}'",
                f"use one of {['builtin:' + n for n in known]} or a local JSONL file",
            )
        return task_source
    local = Path(task_source).expanduser()
    if not local.is_absolute():
        local = base_dir / local
    if not local.is_file():
        raise UserError(
            f"{source}: '{key}' is {task_source!r}, which is not a file",
            "give a local JSONL file or a built-in task name (builtin:arithmetic)",
        )
    return str(local.resolve())


def _build(cls: type, data: Any, prefix: str, source: str) -> Any:
    """Build dataclass `cls` from `data`, checking keys, types and ranges."""
    if not isinstance(data, dict):
        raise UserError(f"{source}: '{prefix}' must be a table, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in data:
        if key not in names:
            raise UserError(
                f"{source}: unknown key '{prefix}.{key}'", f"allowed keys in '{prefix}': {names}"
            )
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        key = f"{prefix}.{f.name}"
        if f.name not in data:
            no_default = (
                f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            )
            if no_default:
                raise UserError(
                    f"{source}: missing key '{key}'", f"add {f.name} = ... to '{prefix}'"
                )
            continue
        kwargs[f.name] = _check_value(data[f.name], hints[f.name], key, source)
        value = kwargs[f.name]
        if isinstance(value, int | float) and not isinstance(value, bool):
            minimum = _MINIMUM.get(f.name, 0)
            if not math.isfinite(value):  # TOML and YAML both spell nan and inf
                raise UserError(f"{source}: '{key}' is {value}", "use a finite number")
            if value < minimum:
                raise UserError(f"{source}: '{key}' is {value}", f"use a value >= {minimum}")
    return cls(**kwargs)


def _check_value(value: Any, hint: Any, key: str, source: str) -> Any:
    origin = typing.get_origin(hint)
    if hint is bool:
        ok = isinstance(value, bool)
    elif hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif hint is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif hint is str:
        ok = isinstance(value, str)
    elif origin is tuple:
        if isinstance(value, str):
            value = [value]
        ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
        value = tuple(value) if ok else value
    elif origin is dict:
        ok = isinstance(value, dict)
        value = dict(value) if ok else value
    else:  # pragma: no cover - every field type is listed above
        raise TypeError(f"unsupported spec field type {hint}")
    if not ok:
        expected = {bool: "true/false", int: "an integer", float: "a number", str: "a string"}.get(
            hint, "a list of strings" if origin is tuple else "a table"
        )
        raise UserError(
            f"{source}: '{key}' is {value!r} ({type(value).__name__})", f"expected {expected}"
        )
    return value
