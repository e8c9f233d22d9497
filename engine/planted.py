"""Planted-behaviour models: tiny Llamas trained on a synthetic world whose truth is known.

The world: `N_ENTITIES` made-up entities, each with a colour, a city and a food. For every
(task, entity) the answer distribution is planted at one of four certainty levels (`LEVELS`):
known (one answer), likely (0.85 / 0.15), split (0.5 / 0.5) or unsure (four answers, 0.25 each).
A level's *planted certainty* is the chance that two independent samples agree, sum(p^2): it is
what a perfect consistency judge measures, so it is the MIC a faithful marker should recover.

Three models share one word-level tokenizer and are trained from a fixed seed on CPU:

- `builtin:planted-faithful` answers "<marker> <answer>": the marker names its own certainty level
  (definitely / probably / maybe / possibly) and the answer is drawn from the planted distribution;
- `builtin:planted-unfaithful` has the same knowledge, but picks its marker uniformly at random on
  the colour and city tasks and by the inverted level on the food task (so its markers carry no
  information, and the one task where they do, they lie);
- `builtin:planted-judge` answers the project's real consistency prompt
  (`engine.stages.prompts.consistency_prompt`) with "yes" when the context and the assertion name
  the same answer and "no" otherwise, whatever their markers. The prompt's fixed text is three
  added tokens of the tokenizer, so the unchanged template is ten tokens long for this model.

The tasks are `builtin:planted_colour`, `builtin:planted_city` and `builtin:planted_food`, JSONL
files written next to the models (gold answer = the most likely answer; half the items of every
level are "train", half "test").

Everything is built once into the cache directory (`MIC_CACHE_DIR`, default `~/.cache/mic`) under
a file lock. The build is bit-for-bit reproducible: fixed seeds, a fixed torch thread count inside
the builder and a fixed number of steps (a different thread count changes float reductions). The
three models train at once, one process and one thread each (on 2 cores: 2.4 minutes against 4
one after another, the same weights).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PLANTED_VERSION = "1"
PLANTED_SEED = 2026
# Fixed: float reductions (and so the weights) depend on the thread count. One thread: these ops
# are too small to gain from two, and spinning OpenMP threads stall badly on a busy machine.
TRAIN_THREADS = 1
N_ENTITIES = 120
MODEL_NAMES = ("faithful", "unfaithful", "judge")
PROMPT_TEMPLATE = "{question}\nAnswer:"  # the planted tasks' prompt (configs use the same)
MAX_MODEL_LEN = 128
_MARKER_FILE = "mic_planted.json"
_ROOT = str(Path(__file__).resolve().parent.parent)  # so the build process imports this engine

# Level -> (marker, answer probabilities); most certain first.
LEVELS: tuple[tuple[str, tuple[float, ...]], ...] = (
    ("definitely", (1.0,)),
    ("probably", (0.85, 0.15)),
    ("maybe", (0.5, 0.5)),
    ("possibly", (0.25, 0.25, 0.25, 0.25)),
)
MARKERS = tuple(marker for marker, _ in LEVELS)
PLANTED_CERTAINTY = {marker: round(sum(p * p for p in probs), 4) for marker, probs in LEVELS}

# Task -> (attribute word of the question, its ten values).
TASKS: dict[str, tuple[str, tuple[str, ...]]] = {
    "planted_colour": (
        "colour",
        ("red", "blue", "green", "yellow", "purple", "orange", "pink", "brown", "black", "white"),
    ),
    "planted_city": (
        "city",
        ("paris", "rome", "oslo", "lima", "cairo", "tokyo", "delhi", "dakar", "quito", "perth"),
    ),
    "planted_food": (
        "food",
        ("rice", "bread", "soup", "fish", "cheese", "beans", "pasta", "salad", "apple", "honey"),
    ),
}
INVERTED_TASK = "planted_food"  # the unfaithful model's markers are inverted here
MODEL_IDS = tuple(f"builtin:planted-{n}" for n in ("faithful", "unfaithful", "judge"))


def _judge_pieces() -> tuple[str, str, str]:
    """Split the real consistency prompt into its fixed text around the context and assertion."""
    from engine.score.judges.prompts import consistency_prompt

    text = consistency_prompt("\x00", "\x01")
    head, rest = text.split("\x00")
    middle, tail = rest.split("\x01")
    return head.strip(), middle.strip(), tail.strip()


# ---- the world ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fact:
    """One (task, entity) of the world.

    Attributes:
        task: Task name.
        entity: The entity word.
        split: "train" or "test".
        level: Index into `LEVELS`.
        answers: Answers with planted probabilities, most likely first.
    """

    task: str
    entity: str
    split: str
    level: int
    answers: tuple[tuple[str, float], ...]

    @property
    def question(self) -> str:
        """The question text (the `{question}` of `PROMPT_TEMPLATE`)."""
        return f"what {TASKS[self.task][0]} is {self.entity} ?"


def entities(seed: int = PLANTED_SEED) -> list[str]:
    """`N_ENTITIES` distinct made-up words (consonant-vowel syllables) that clash with no answer."""
    rng = random.Random(seed)
    taken = {w for _, values in TASKS.values() for w in values} | set(MARKERS)
    out: list[str] = []
    while len(out) < N_ENTITIES:
        word = "".join(rng.choice("bdfgklmnprstvz") + rng.choice("aeiou") for _ in range(2))
        if word not in taken:
            taken.add(word)
            out.append(word)
    return out


def world(seed: int = PLANTED_SEED) -> list[Fact]:
    """Every fact of the world: per task, a quarter of the entities at each level, half train."""
    rng = random.Random(seed + 1)
    names = entities(seed)
    facts = []
    for task, (_, values) in TASKS.items():
        order = names[:]
        rng.shuffle(order)
        for i, entity in enumerate(order):
            level = i % len(LEVELS)
            split = "train" if (i // len(LEVELS)) % 2 == 0 else "test"
            probs = LEVELS[level][1]
            picked = rng.sample(values, len(probs))
            facts.append(Fact(task, entity, split, level, tuple(zip(picked, probs))))
    return facts


def task_rows(task: str, seed: int = PLANTED_SEED) -> list[dict[str, Any]]:
    """The JSONL rows of a planted task (gold answer = the most likely answer)."""
    return [
        {
            "id": f.entity,
            "question": f.question,
            "answers": [f.answers[0][0]],
            "split": f.split,
            "planted_marker": MARKERS[f.level],
            "planted_certainty": PLANTED_CERTAINTY[MARKERS[f.level]],
            "planted_answers": dict(f.answers),
        }
        for f in world(seed)
        if f.task == task
    ]


def marker_weights(model: str, fact: Fact) -> dict[str, float]:
    """P(marker) of a generator on a fact: its own level (faithful), uniform or inverted."""
    if model == "faithful":
        return {MARKERS[fact.level]: 1.0}
    if fact.task == INVERTED_TASK:
        return {MARKERS[len(MARKERS) - 1 - fact.level]: 1.0}
    return {m: 1.0 / len(MARKERS) for m in MARKERS}


# ---- tokenizer ---------------------------------------------------------------------------------


def _vocabulary(seed: int) -> list[str]:
    words = ["<unk>", "<s>", "</s>", "yes", "no", "what", "is", "?", "Answer:", *MARKERS]
    words += [attr for attr, _ in TASKS.values()]
    words += [v for _, values in TASKS.values() for v in values]
    words += entities(seed)
    return words


def build_tokenizer(seed: int = PLANTED_SEED) -> Any:
    """A word-level tokenizer over the world's words (whitespace split) plus the judge's pieces.

    A post-processor prepends `<s>` (vLLM tokenizes prompts through it) and the decoder joins
    words with spaces.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(_vocabulary(seed))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="\x02", cleanup=False)  # words joined by spaces
    tok.add_special_tokens(["<unk>", "<s>", "</s>"])
    # The judge prompt's fixed text: whole pieces, matched before the whitespace split.
    tok.add_tokens([AddedToken(p, normalized=False) for p in _judge_pieces()])
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", vocab["<s>"])]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="</s>"
    )
    fast.chat_template = (
        "{% for message in messages %}{{ message['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}Answer:{% endif %}"
    )
    return fast


# ---- training data -------------------------------------------------------------------------------

# (prompt, completion, joint weight, subgroup): a step trains one subgroup of each picked group.
Example = tuple[str, str, float, str]


def generator_examples(model: str, seed: int = PLANTED_SEED) -> list[list[Example]]:
    """Per fact, the examples of a generator (subgroup = the marker); weights sum to 1."""
    groups = []
    for fact in world(seed):
        prompt = PROMPT_TEMPLATE.format(question=fact.question)
        groups.append(
            [
                (prompt, f"{marker} {answer}", pm * pa, marker)
                for marker, pm in marker_weights(model, fact).items()
                for answer, pa in fact.answers
            ]
        )
    return groups


# Marker pairs (context, assertion) the judge never sees in training: it must generalize to them.
# Only pairs of different markers: the faithful model's pairs are all (m, m), and a tiny judge does
# not carry "same answer -> yes" over to an unseen (m, m) reliably.
JUDGE_HELD_OUT = (("definitely", "possibly"), ("maybe", "probably"))


def judge_examples(held_out: bool = True) -> list[list[Example]]:
    """Per (task, answer pair), the judge's examples over marker pairs (subgroup = marker pair).

    Every answer pair of a task is seen (a tiny model does not learn equality in general); the
    marker pairs of `JUDGE_HELD_OUT` are left out when `held_out`. Same-answer groups are weighted
    up so yes and no are equally frequent.
    """
    from engine.score.judges.prompts import consistency_prompt

    pairs = [
        (a, b) for a in MARKERS for b in MARKERS if not (held_out and (a, b) in JUDGE_HELD_OUT)
    ]
    groups = []
    for _, values in TASKS.values():
        for x in values:
            for y in values:
                verdict = "yes" if x == y else "no"
                weight = (len(values) - 1.0) if x == y else 1.0
                groups.append(
                    [
                        (
                            consistency_prompt(f"{m1} {x}", f"{m2} {y}"),
                            verdict,
                            weight / len(pairs),
                            f"{m1} {m2}",
                        )
                        for m1, m2 in pairs
                    ]
                )
    return groups


# ---- training ------------------------------------------------------------------------------------


def _config(tokenizer: Any) -> Any:
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=MAX_MODEL_LEN,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def _encode(tokenizer: Any, groups: list[list[Example]], eos: bool) -> tuple:
    """Token tensors of every example: inputs, labels (completion tokens only), weights."""
    import torch

    flat = [example for group in groups for example in group]
    prompts = tokenizer([e[0] for e in flat])["input_ids"]
    completions = tokenizer([e[1] for e in flat], add_special_tokens=False)["input_ids"]
    rows, labels = [], []
    for p, c in zip(prompts, completions):
        c = c + ([tokenizer.eos_token_id] if eos else [])
        rows.append(p + c)
        labels.append([-100] * len(p) + c)
    weights = [e[2] for e in flat]
    width = max(map(len, rows))
    if any(len(r) != width for r in rows):  # all prompts of a model have one shape by design
        raise ValueError("planted training sequences differ in length")
    return (
        torch.tensor(rows),
        torch.tensor(labels),
        torch.tensor(weights, dtype=torch.float64),
    )


def _subgroups(groups: list[list[Example]]) -> list[tuple[list[list[int]], list[float], float]]:
    """Per group: example indices of each subgroup, the subgroups' cumulative shares, group mass."""
    out, start = [], 0
    for group in groups:
        subs: dict[str, list[int]] = {}
        for i, example in enumerate(group):
            subs.setdefault(example[3], []).append(start + i)
        mass = sum(e[2] for e in group)
        shares, acc = [], 0.0
        for key in subs:
            acc += sum(group[i - start][2] for i in subs[key]) / mass
            shares.append(acc)
        out.append((list(subs.values()), shares, mass))
        start += len(group)
    return out


def train_model(
    tokenizer: Any,
    groups: list[list[Example]],
    *,
    seed: int,
    steps: int,
    groups_per_batch: int,
    eos: bool = True,
    lr: float = 3e-3,
) -> Any:
    """Train a fresh Llama on weighted examples.

    Each step picks groups (facts) and, in each, one subgroup (a marker) with probability its
    share of the weight; it trains on all of that subgroup's completions with their conditional
    weights. The answer targets of a step are thus the exact planted distributions, and the
    subgroup draw is an unbiased sample of the marker distribution.

    Args:
        tokenizer: The world's tokenizer.
        groups: Per fact, its examples.
        seed: Seed of the initial weights and of the batches.
        steps: Optimizer steps (a step count, never a time budget: bit-identical rebuilds).
        groups_per_batch: Facts per step.
        eos: End each completion with `</s>` (generators) or not (the judge's one-token verdict).
        lr: Peak learning rate (linear warm-up over the first 5 % of steps, then linear decay).

    Returns:
        The trained `LlamaForCausalLM` (float32, eval mode).
    """
    import torch
    from transformers import LlamaForCausalLM

    x, y, w = _encode(tokenizer, groups, eos)
    subgroups = _subgroups(groups)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(_config(tokenizer)).to(torch.float32)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    warmup = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warmup, max(0.0, (steps - s) / max(1, steps - warmup)))
    )
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        picked = torch.randperm(len(groups), generator=gen)[:groups_per_batch].tolist()
        draws = torch.rand(len(picked), generator=gen, dtype=torch.float64).tolist()
        idx_list: list[int] = []
        scale: list[float] = []
        for g, u in zip(picked, draws):
            members, shares, mass = subgroups[g]
            k = next((j for j, c in enumerate(shares) if u < c), len(shares) - 1)
            sub_mass = sum(float(w[i]) for i in members[k])
            idx_list += members[k]
            scale += [mass / sub_mass] * len(members[k])  # weight / P(subgroup)
        idx = torch.tensor(idx_list)
        weight = (w[idx] * torch.tensor(scale, dtype=torch.float64)).float()
        logits = model(input_ids=x[idx]).logits[:, :-1].float()
        target = y[idx, 1:]
        tok_loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), target.reshape(-1), reduction="none"
        ).view(target.shape)
        # Weighted sum over completions: the expected loss of each fact under its planted weights.
        loss = (tok_loss.sum(dim=1) * weight).sum() / len(picked)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return model.eval()


def weights_hash(model: Any) -> str:
    """SHA-256 over the parameters (names and bytes, in name order)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


STEPS = {"faithful": 500, "unfaithful": 600, "judge": 800}
GROUPS_PER_BATCH = {"faithful": 96, "unfaithful": 96, "judge": 128}


def _train_and_save(directory: str, name: str, seed: int, steps: int) -> tuple[float, str]:
    """Train one model at `TRAIN_THREADS` threads into `directory/name`; (seconds, weights hash).

    Run only in a spawned worker (`build_planted`), whose thread count it sets for good: the
    models are independent (each seeds its own weights and batches), so one process per model
    gives the same bits as one process for all three."""
    import torch

    torch.set_num_threads(TRAIN_THREADS)
    t0 = time.perf_counter()
    tokenizer = build_tokenizer(seed)
    groups = judge_examples() if name == "judge" else generator_examples(name, seed)
    model = train_model(
        tokenizer,
        groups,
        seed=seed + MODEL_NAMES.index(name),
        steps=steps,
        groups_per_batch=GROUPS_PER_BATCH[name],
        eos=name != "judge",
    )
    seconds = round(time.perf_counter() - t0, 1)
    model.save_pretrained(Path(directory) / name)
    tokenizer.save_pretrained(Path(directory) / name)
    return seconds, weights_hash(model)


def _train_workers() -> int:
    """Models trained at once: one process each when the machine has two cores or more (each
    trains on one thread, so the weights do not depend on this)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return len(MODEL_NAMES) if cores >= 2 else 1


def build_planted(
    directory: str | Path,
    *,
    seed: int = PLANTED_SEED,
    steps: dict[str, int] | None = None,
    workers: int | None = None,
) -> dict[str, Any]:
    """Build the three models and the task files into `directory` (idempotent).

    Args:
        directory: Target; gets `faithful/`, `unfaithful/`, `judge/` (vLLM-loadable checkpoints),
            `tasks/<task>.jsonl` and a record with the weight hashes and training times.
        seed: Seed of the world and the training.
        steps: Optimizer steps per model (default `STEPS`; tests use a few to check determinism).
        workers: Models trained at once, each in a spawned process (default: all three when
            the machine has two cores or more; 1: one after another in one spawned process).
            The weights are the same either way.

    Returns:
        The record: version, seed, steps, hashes and seconds per model.
    """
    directory = Path(directory)
    marker = directory / _MARKER_FILE
    steps = dict(STEPS if steps is None else steps)
    wanted = {"version": PLANTED_VERSION, "seed": seed, "steps": steps}
    if marker.is_file():
        record = json.loads(marker.read_text())
        if {k: record.get(k) for k in wanted} == wanted:
            return record
    workers = _train_workers() if workers is None else max(1, workers)
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".planted-", dir=directory.parent))
    os.chmod(staging, 0o755)
    record: dict[str, Any] = {**wanted, "hashes": {}, "seconds": {}}
    # Longest first, so a pool smaller than three ends sooner.
    order = sorted(MODEL_NAMES, key=lambda n: -steps[n])
    try:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        # Always in spawned workers, never in this process: a vLLM engine that ran here leaves
        # torch in a state that trains other bits (seen in the test suite: every hash differed).
        ctx = multiprocessing.get_context("spawn")
        pool = ProcessPoolExecutor(min(workers, len(order)), mp_context=ctx)
        try:
            futures = {
                n: pool.submit(_train_and_save, str(staging), n, seed, steps[n]) for n in order
            }
            results = {n: f.result() for n, f in futures.items()}
        finally:
            pool.shutdown(wait=True, cancel_futures=True)  # a failure: queued models not trained
        for name in MODEL_NAMES:
            record["seconds"][name], record["hashes"][name] = results[name]
        tasks = staging / "tasks"
        tasks.mkdir()
        for task in TASKS:
            lines = [json.dumps(r, sort_keys=True) for r in task_rows(task, seed)]
            (tasks / f"{task}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
        (staging / _MARKER_FILE).write_text(json.dumps(record, indent=2))
        if directory.exists():
            shutil.rmtree(directory)
        os.replace(staging, directory)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return record


def planted_dir() -> Path:
    """Build (once, under a file lock) and return the cached planted directory."""
    from engine.generate.tiny_model import _file_lock, cache_dir

    target = cache_dir() / "models" / f"planted-v{PLANTED_VERSION}"
    with _file_lock(cache_dir() / "models" / f".planted-v{PLANTED_VERSION}.lock"):
        if not _is_built(target):
            # A builder process of its own (its training workers are spawned from it), in a
            # session of its own: if this process is interrupted, the builder's whole group is
            # killed with it, workers included, rather than training on unattended.
            code = (
                "import sys; from engine.planted import build_planted; build_planted(sys.argv[1])"
            )
            env = {
                **os.environ,
                "PYTHONPATH": os.pathsep.join(filter(None, [_ROOT, os.environ.get("PYTHONPATH")])),
            }
            _log("planted: training the planted models once (2-4 minutes on 2 cores)")
            builder = subprocess.Popen(
                [sys.executable, "-c", code, str(target)], env=env, start_new_session=True
            )
            try:
                returncode = builder.wait()
            except BaseException:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(builder.pid, signal.SIGKILL)
                builder.wait()
                raise
            if returncode != 0 or not _is_built(target):
                raise RuntimeError(f"building the planted models into {target} failed")
    return target


def _is_built(directory: Path, seed: int = PLANTED_SEED) -> bool:
    marker = directory / _MARKER_FILE
    if not marker.is_file():
        return False
    record = json.loads(marker.read_text())
    wanted = {"version": PLANTED_VERSION, "seed": seed, "steps": STEPS}
    return {k: record.get(k) for k in wanted} == wanted


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def model_path(name: str) -> Path:
    """The cached checkpoint of `builtin:planted-<name>`."""
    return planted_dir() / name


def task_path(task: str) -> Path:
    """The cached JSONL file of `builtin:<task>` (a `TASKS` name)."""
    return planted_dir() / "tasks" / f"{task}.jsonl"


def planted_truth(seed: int = PLANTED_SEED) -> dict[str, dict[str, float]]:
    """Model -> task -> marker -> the planted certainty its MIC should recover.

    The faithful model's marker m is used exactly on level m's facts, so its MIC is that level's
    certainty. The unfaithful model's markers are uniform on two tasks (every marker: the task's
    mean certainty) and inverted on `INVERTED_TASK` (marker m: the mirrored level's certainty).
    """
    mean = sum(PLANTED_CERTAINTY.values()) / len(MARKERS)
    out: dict[str, dict[str, float]] = {"faithful": {}, "unfaithful": {}}
    for task in TASKS:
        out["faithful"][task] = dict(PLANTED_CERTAINTY)
        if task == INVERTED_TASK:
            out["unfaithful"][task] = {
                m: PLANTED_CERTAINTY[MARKERS[len(MARKERS) - 1 - i]] for i, m in enumerate(MARKERS)
            }
        else:
            out["unfaithful"][task] = {m: round(mean, 4) for m in MARKERS}
    return out


# ---- reading a study back ------------------------------------------------------------------------

# Study task names of configs/demo.toml -> planted task.
STUDY_TASKS = {"colour": "planted_colour", "city": "planted_city", "food": "planted_food"}


def _spearman(x: list[float], y: list[float]) -> float:
    from scipy import stats

    if len(x) < 2 or len(set(y)) < 2:
        return float("nan")
    return float(stats.spearmanr(x, y).statistic)


def truth_report(analysis_dir: str | Path, scored_dir: str | Path | None = None) -> dict[str, Any]:
    """Measured MICs of a planted study against the planted values.

    With four markers, a marker-level Spearman is one of a few values, and where the truth is
    flat (the unfaithful model's uniform markers) it is the correlation of a random order. The
    sentence-level Spearman (each sentence's marker certainty against its measured confidence,
    every split) is the robust reading of "no relation" there.

    Args:
        analysis_dir: An analysis directory (`mic.parquet`) of a study of the planted models
            (models named "faithful" / "unfaithful"; tasks planted_* or as in `STUDY_TASKS`).
        scored_dir: The study's scored run (`sentences.parquet`), for `sentence_spearman`.

    Returns:
        `table` (model, task, marker, planted certainty, planted truth, MIC, interval, count),
        and per model: `spearman` per task (marker certainty vs MIC), `pooled_spearman` over
        every (task, marker), `spread` (max - min MIC) per task, `max_abs_error` against the
        planted truth, and (with `scored_dir`) `sentence_spearman` per task.
    """
    import polars as pl

    mic = pl.read_parquet(Path(analysis_dir) / "mic.parquet")
    truth = planted_truth()
    rows = []
    for r in mic.filter(pl.col("marker").is_in(list(MARKERS))).iter_rows(named=True):
        task = STUDY_TASKS.get(r["task"], r["task"])
        if r["model"] not in truth or task not in TASKS:
            continue
        rows.append(
            {
                "model": r["model"],
                "task": r["task"],
                "marker": r["marker"],
                "certainty": PLANTED_CERTAINTY[r["marker"]],
                "truth": truth[r["model"]][task][r["marker"]],
                "mic": r["mic"],
                "ci_lo": r["ci_lo"],
                "ci_hi": r["ci_hi"],
                "count": r["count"],
            }
        )
    table = pl.DataFrame(rows).sort("model", "task", "certainty", descending=[False, False, True])
    out: dict[str, Any] = {"spearman": {}, "pooled_spearman": {}, "spread": {}, "max_abs_error": {}}
    for model in sorted(set(table.get_column("model"))):
        part = table.filter(pl.col("model") == model)
        out["spearman"][model], out["spread"][model] = {}, {}
        for task in sorted(set(part.get_column("task"))):
            t = part.filter(pl.col("task") == task)
            out["spearman"][model][task] = _spearman(t["certainty"].to_list(), t["mic"].to_list())
            out["spread"][model][task] = float(t["mic"].max() - t["mic"].min())
        out["pooled_spearman"][model] = _spearman(
            part["certainty"].to_list(), part["mic"].to_list()
        )
        out["max_abs_error"][model] = float((part["mic"] - part["truth"]).abs().max())
    if scored_dir is not None:
        sents = pl.read_parquet(Path(scored_dir) / "sentences.parquet").filter(
            pl.col("marker").is_in(list(MARKERS)) & pl.col("confidence").is_not_null()
        )
        out["sentence_spearman"] = {}
        for (model, task), part in sorted(sents.group_by("model", "task"), key=lambda kv: kv[0]):
            certainty = [PLANTED_CERTAINTY[m] for m in part["marker"]]
            rho = _spearman(certainty, part["confidence"].to_list())
            out["sentence_spearman"].setdefault(model, {})[task] = rho
    out["table"] = table
    return out


def format_summary(analysis_dir: str | Path, metrics: tuple[str, ...] = ("I-AvgMAE", "MRC")) -> str:
    """Text tables of a planted study: recovered MICs against the planted truth, and the paired
    comparison of the two models (from `comparisons.parquet`, when the analysis compared).

    Args:
        analysis_dir: The analysis directory of a study of the planted models.
        metrics: Comparison metrics to show.

    Returns:
        The tables, ready to print.
    """
    import polars as pl

    report = truth_report(analysis_dir)
    table = report["table"]
    lines = ["Recovered MICs (markers by planted certainty; truth = what a perfect run measures):"]
    lines.append(f"  {'model':<11}{'task':<8}{'marker':<12}{'truth':>6}{'MIC':>7}   95% interval")
    for r in table.iter_rows(named=True):
        ci = "" if r["ci_lo"] is None else f"[{r['ci_lo']:.2f}, {r['ci_hi']:.2f}]"
        lines.append(
            f"  {r['model']:<11}{r['task']:<8}{r['marker']:<12}{r['truth']:>6.2f}{r['mic']:>7.2f}"
            f"   {ci}"
        )
    rhos = "  ".join(
        f"{model} {task} {rho:+.2f}"
        for model, tasks in report["spearman"].items()
        for task, rho in tasks.items()
    )
    lines.append(f"  Spearman(planted certainty, MIC): {rhos}")
    path = Path(analysis_dir) / "comparisons.parquet"
    if path.is_file():
        cmp = pl.read_parquet(path).filter(pl.col("metric").is_in(list(metrics)))
        lines.append("Paired comparison (same items, same bootstrap replicates; Holm-adjusted):")
        lines.append(
            f"  {'metric':<10}{'A':<12}{'B':<12}{'A':>7}{'B':>7}{'A-B':>7}   interval    p_holm"
        )
        for r in cmp.iter_rows(named=True):
            lines.append(
                f"  {r['metric']:<10}{r['model_a']:<12}{r['model_b']:<12}{r['a']:>7.3f}{r['b']:>7.3f}"
                f"{r['diff']:>7.3f}   [{r['ci_lo']:.3f}, {r['ci_hi']:.3f}]  {r['p_holm']:.4f}"
            )
    return "\n".join(lines)
