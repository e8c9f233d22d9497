"""Task loaders: Hugging Face hub tasks from the registry, and local JSONL / Parquet / CSV files.

Every loader returns `Item`s of one role ("train" or "test"), shuffled with a seed (42) and cut to an
item limit (5,000) - in that order, so a smaller limit takes a prefix of a larger one.

Local files come in two shapes:

- *plain*: one row per item with an id, a question, gold answers and optionally a split and choices
  (the bundled sample format ``{"id", "question", "answers": [...], "split", "choices"}``); other
  column names are mapped with `ColumnMap`; choices are appended to the question as lettered
  options unless the question already lists them;
- *hub export*: rows with a registry task's raw hub fields (e.g. a SciQ or ARC-Challenge export);
  pass ``task=`` and the task's builder makes the items exactly as from the hub.

Bad input raises `UserError` naming the file and the column: a missing question / answer column, an
empty task, duplicate item ids; and naming the line too for a value that would become a wrong item
silently (a null or non-string question, a null id or answers, a split differing from a requested
one only in case, an unpaired surrogate escape, a hub-export row its task's builder cannot read).
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import logging
import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.errors import UserError
from engine.tasks.registry import Source, TaskSpec, get_task
from engine.tasks.sources import Item, parse_source

if TYPE_CHECKING:
    from engine.config.sweep import SweepTask

DEFAULT_SEED = 42
# Split names a task file may hold beyond those a sweep asks for, left out without a word.
KNOWN_SPLITS = frozenset({"train", "test", "validation", "valid", "val", "dev", "eval"})
DEFAULT_LIMIT = 5000
ROLES = ("train", "test")
LETTERS = "ABCDEFGHIJ"
logger = logging.getLogger(__name__)
POPQA_RELATIONS = ("director", "screenwriter", "producer", "author", "place of birth", "occupation")


@dataclass(frozen=True)
class ColumnMap:
    """Column names of a plain local task file.

    Attributes:
        id: Item id column (None: ids are the row numbers).
        question: Question column.
        answers: Gold answer column (a list, a JSON list in a string, or one string).
        split: Split column (None: every row gets the ``split`` passed to the loader).
        choices: Option texts column for multiple choice (None: no choices).
    """

    id: str | None = "id"
    question: str = "question"
    answers: str = "answers"
    split: str | None = "split"
    choices: str | None = "choices"


# ---- building items from raw hub rows -----------------------------------------------------------

Built = tuple[str, list[str], list[str] | None]  # question, answers, choices


def format_mc(question: str, choices: Sequence[str]) -> str:
    """Question text with lettered options, one per line ("A. ...")."""
    lines = [question.strip()] + [f"{LETTERS[i]}. {str(c).strip()}" for i, c in enumerate(choices)]
    return "\n".join(lines)


def _yes(flag: bool) -> list[str]:
    return ["yes" if flag else "no"]


def _b_popqa(row: dict, source: Source, item_id: str, seed: int) -> list[Built]:
    if row.get("prop") not in POPQA_RELATIONS or len(str(row.get("obj", ""))) <= 2:
        return []
    answers = row["possible_answers"]
    if isinstance(answers, str):
        answers = json.loads(answers)
    return [(row["question"], list(answers), None)]


def _b_selfaware(row: dict, source: Source, item_id: str, seed: int) -> list[Built]:
    answers = row.get("answer")
    if not answers or (isinstance(answers, str) and not answers.strip()):
        answers = ["unanswerable"]
    elif isinstance(answers, str):
        answers = [answers]
    question = f"{row['question'].strip()} If the question is unanswerable, say so."
    return [(question, list(answers), None)]


def _b_simpleqa(row: dict, source: Source, item_id: str, seed: int) -> list[Built]:
    return [(row["problem"], [row["answer"]], None)]


def _b_truthfulqa(row: dict, source: Source, item_id: str, seed: int) -> list[Built]:
    return [(row["question"], list(row["correct_answers"]), None)]


def _halueval(template: str, fields: tuple[str, str]) -> Callable[..., list[Built]]:
    def build(row: dict, source: Source, item_id: str, seed: int) -> list[Built]:
        a, b = (" ".join(str(row[f]).split()) for f in fields)
        label = str(row["hallucination"]).strip().lower()
        if label not in ("yes", "no"):
            return []
        return [(template.format(a=a, b=b), [label], None)]

    return build


def _b_ambignq(row: dict, source: Source, item_id: str, seed: int) -> list[Built]:
    ann = row["annotations"]
    out: list[Built] = []
    types = list(ann.get("type", []))
    if "singleAnswer" in types:
        answers = ann["answer"][types.index("singleAnswer")]
        out.append((row["question"], list(answers), None))
    elif "multipleQAs" in types:
        for pairs in ann.get("qaPairs", []):
            for q, a in zip(pairs.get("question", []), pairs.get("answer", [])):
                out.append((q, list(a), None))
    return out


def _entails(label: object) -> bool | None:
    text = str(label).strip().lower()
    if text in ("entailment", "1"):
        return True
    if text in ("not_entailment", "not entailment", "0"):
        return False
    return None


def _b_wnli(row: dict, source: Source, item_id: str, seed: int) -> list[Built]:
    verdict = _entails(row.get("label_text", row.get("label")))
    if verdict is None:
        return []
    q = f"Premise: {row['text1'].strip()}\nHypothesis: {row['text2'].strip()}"
    return [(q, _yes(verdict), None)]


def _b_mmlu(row: dict, source: Source, item_id: str, seed: int) -> list[Built]:
    choices = [str(c) for c in row["choices"]]
    return [(format_mc(row["question"], choices), [LETTERS[int(row["answer"])]], choices)]


def _b_sciq(row: dict, source: Source, item_id: str, seed: int) -> list[Built]:
    correct = row["correct_answer"]
    choices = [row["distractor1"], row["distractor2"], row["distractor3"], correct]
    random.Random(f"{seed}:{item_id}").shuffle(choices)
    return [(format_mc(row["question"], choices), [LETTERS[choices.index(correct)]], choices)]


def _b_labeled_choices(row: dict, source: Source, item_id: str, seed: int) -> list[Built]:
    labels = [str(x) for x in row["choices"]["label"]]
    texts = [str(x) for x in row["choices"]["text"]]
    key = str(row["answerKey"]).strip()
    if key not in labels:
        return []
    # ARC uses "1".."4" for some items: re-letter in order
    return [(format_mc(row["question"], texts), [LETTERS[labels.index(key)]], texts)]


def _b_superglue_boolq(row: dict, source: Source, item_id: str, seed: int) -> list[Built]:
    if int(row["label"]) not in (0, 1):
        return []
    q = f"{row['passage'].strip()}\nQuestion: {row['question'].strip()}?"
    return [(q, _yes(int(row["label"]) == 1), None)]


def _b_superglue_rte(row: dict, source: Source, item_id: str, seed: int) -> list[Built]:
    if int(row["label"]) not in (0, 1):
        return []
    q = f"Premise: {row['premise'].strip()}\nHypothesis: {row['hypothesis'].strip()}"
    return [(q, _yes(int(row["label"]) == 0), None)]  # RTE: 0 = entailment


def _b_boolq(row: dict, source: Source, item_id: str, seed: int) -> list[Built]:
    q = f"{row['passage'].strip()}\nQuestion: {row['question'].strip()}?"
    return [(q, _yes(bool(row["answer"])), None)]


def _b_strategyqa(row: dict, source: Source, item_id: str, seed: int) -> list[Built]:
    return [(row["question"], _yes(bool(row["answer"])), None)]


def _b_gsm8k(row: dict, source: Source, item_id: str, seed: int) -> list[Built]:
    answer = str(row["answer"]).split("####")[-1].strip().replace(",", "")
    return [(row["question"], [answer], None)]


def _b_medmcqa(row: dict, source: Source, item_id: str, seed: int) -> list[Built]:
    if row.get("cop") is None or int(row["cop"]) not in range(4):
        return []
    choices = [str(row[k]) for k in ("opa", "opb", "opc", "opd")]
    return [(format_mc(row["question"], choices), [LETTERS[int(row["cop"])]], choices)]


def _b_casehold(row: dict, source: Source, item_id: str, seed: int) -> list[Built]:
    choices = [str(row[f"holding_{i}"]) for i in range(5)]
    return [(format_mc(row["citing_prompt"], choices), [LETTERS[int(row["label"])]], choices)]


BUILDERS: dict[str, Callable[..., list[Built]]] = {
    "popqa": _b_popqa,
    "selfaware": _b_selfaware,
    "simpleqa": _b_simpleqa,
    "truthfulqa": _b_truthfulqa,
    "halueval_dialogue": _halueval(
        "Dialogue: {a}\nResponse: {b}", ("dialogue_history", "response")
    ),
    "halueval_general": _halueval(
        "Question: {a}\nResponse: {b}", ("user_query", "chatgpt_response")
    ),
    "halueval_qa": _halueval("Question: {a}\nResponse: {b}", ("question", "answer")),
    "halueval_summarization": _halueval("Document: {a}\nSummary: {b}", ("document", "summary")),
    "ambignq": _b_ambignq,
    "wnli": _b_wnli,
    "mmlu": _b_mmlu,
    "sciq": _b_sciq,
    "arc": _b_labeled_choices,
    "commonsenseqa": _b_labeled_choices,
    "superglue_boolq": _b_superglue_boolq,
    "superglue_rte": _b_superglue_rte,
    "boolq": _b_boolq,
    "strategyqa": _b_strategyqa,
    "gsm8k": _b_gsm8k,
    "medmcqa": _b_medmcqa,
    "casehold": _b_casehold,
}


# ---- roles, shuffle, limit ----------------------------------------------------------------------


def assign_role(item_id: str, seed: int = DEFAULT_SEED) -> str:
    """Seeded 50/50 train / test assignment by item id (for tasks with no test split).

    Args:
        item_id: The item's id.
        seed: The split seed.

    Returns:
        "train" or "test"; stable across runs, machines and item order.
    """
    digest = hashlib.sha256(f"{seed}:{item_id}".encode()).digest()
    return "train" if digest[0] % 2 == 0 else "test"


def shuffle_and_limit(
    items: Sequence[Item], *, seed: int = DEFAULT_SEED, limit: int | None = DEFAULT_LIMIT
) -> list[Item]:
    """Shuffle items with a seeded permutation (ordered by id first), then keep the first ``limit``.

    Args:
        items: Items of one task and role.
        seed: Shuffle seed.
        limit: Maximum number of items (None: all).

    Returns:
        The shuffled, limited items.
    """
    ordered = sorted(items, key=lambda it: it.item_id)
    perm = np.random.default_rng(seed).permutation(len(ordered))
    shuffled = [ordered[i] for i in perm]
    return shuffled if limit is None else shuffled[:limit]


def _check_items(items: list[Item], origin: str, id_column: str) -> None:
    if not items:
        raise UserError(f"{origin}: the task has no items", "check the file, split and filters")
    seen: set[str] = set()
    for it in items:
        if it.item_id in seen:
            raise UserError(
                f"{origin}: duplicate item id {it.item_id!r} in column {id_column!r}",
                "give every item a unique id",
            )
        seen.add(it.item_id)


def _check_role(role: str) -> None:
    if role not in ROLES:
        raise UserError(f"unknown split role {role!r}", "use 'train' or 'test'")


# ---- raw rows from sources ----------------------------------------------------------------------


def _build_rows(
    rows: Iterable[dict],
    source: Source,
    task: str,
    prefix: str,
    role: str | None,
    seed: int,
    labels: Sequence[str] | None = None,
) -> list[Item]:
    """Items of raw hub rows (from the hub, or a local export: then `labels` names each row as
    `FILE:LINE` and a row the builder cannot read is refused on one line)."""
    builder = BUILDERS[source.builder]
    items: list[Item] = []
    for n, row in enumerate(rows):
        base = str(row[source.id_field]) if source.id_field and source.id_field in row else f"{n}"
        base = f"{prefix}{base}"
        try:
            built = builder(row, source, base, seed)
            built = [
                (_text(q), [_text(a) for a in _answer_list(answers)], c) for q, answers, c in built
            ]
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
            where = labels[n] if labels is not None else f"{task}: row {n + 1}"
            fields = ", ".join(repr(f) for f in (*source.question_fields, source.answer_field))
            reason = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc)
            raise UserError(
                f"{where}: cannot read the row as a {task} item ({reason})",
                f"check its fields {fields} against the {source.hf_id} format",
            ) from None
        for k, (question, answers, choices) in enumerate(built):
            item_id = base if len(built) == 1 else f"{base}-{k}"
            item_role = role or assign_role(item_id, seed)
            items.append(
                Item(
                    task,
                    item_id,
                    str(question),
                    tuple(str(a) for a in answers),
                    item_role,
                    tuple(choices) if choices is not None else None,
                )
            )
    return items


def _text(value: object) -> str:
    """A question or answer of a hub row as text; null (which `str` would make "None") is refused."""
    if value is None:
        raise ValueError("a question or answer is null")
    return str(value)


def _answer_list(answers: object) -> list[Any]:
    """A builder's answers as a list: a single string or number is one answer, null is refused."""
    if isinstance(answers, str | int | float) and not isinstance(answers, bool):
        return [answers]
    if answers is None:
        raise ValueError("the answers are null")
    return list(answers)  # TypeError for anything that is not a sequence


def _import_datasets() -> Any:
    try:
        import datasets
    except ImportError as exc:
        raise UserError(
            "loading a task from the Hugging Face hub needs the `datasets` package",
            "pip install datasets (or load a local task file instead)",
        ) from exc
    return datasets


def load_hub_task(
    task: str | TaskSpec,
    role: str = "train",
    *,
    seed: int = DEFAULT_SEED,
    limit: int | None = DEFAULT_LIMIT,
) -> list[Item]:
    """Load a registry task from the Hugging Face hub.

    Args:
        task: Registry name or spec.
        role: "train" (reference split) or "test" (scored split).
        seed: Shuffle and 50/50-split seed.
        limit: Item limit after shuffling.

    Returns:
        The task's items of that role.

    Raises:
        UserError: When `datasets` is missing, the role is unknown or the task is empty.
    """
    spec = task if isinstance(task, TaskSpec) else get_task(task)
    _check_role(role)
    datasets = _import_datasets()
    items: list[Item] = []
    for source in spec.sources:
        split = source.train_split if role == "train" or source.test_split is None else None
        split = split or source.test_split
        rows = datasets.load_dataset(source.hf_id, source.config, split=split)
        fixed_role = role if source.test_split is not None else None
        prefix = f"{source.config}:" if len(spec.sources) > 1 else ""
        built = _build_rows(rows, source, spec.name, prefix, fixed_role, seed)
        items.extend(it for it in built if it.split == role)
    _check_items(items, f"{spec.hf_id} ({spec.name}, {role})", spec.sources[0].id_field or "row")
    return shuffle_and_limit(items, seed=seed, limit=limit)


# ---- local files --------------------------------------------------------------------------------


def read_rows(path: str | Path) -> list[dict]:
    """Rows of a local JSONL, JSON (list), Parquet or CSV file as dicts.

    Raises:
        UserError: For a missing file, an unknown extension or an unreadable line.
    """
    return read_labelled_rows(path)[0]


def read_labelled_rows(path: str | Path) -> tuple[list[dict], list[str]]:
    """`read_rows` plus where each row is, for messages: `FILE:LINE` for JSONL, `FILE: row N`
    otherwise."""
    path = Path(path)
    if path.suffix.lower() in (".jsonl", ".ndjson") and path.exists():
        numbered = list(read_jsonl(path))
        return [row for _, row in numbered], [f"{path}:{lineno}" for lineno, _ in numbered]
    rows = _read_rows(path)
    return rows, [f"{path}: row {n + 1}" for n in range(len(rows))]


def _read_rows(path: Path) -> list[dict]:
    if not path.exists():
        raise UserError(f"{path}: task file not found")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return [row for _, row in read_jsonl(path)]
    if suffix == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        return data if isinstance(data, list) else list(data.get("data", []))
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    if suffix == ".csv":
        with path.open(newline="", encoding="utf-8") as fh:
            return list(csv.DictReader(fh))
    raise UserError(
        f"{path}: unknown task file type {suffix!r}", "use .jsonl, .json, .parquet or .csv"
    )


def read_jsonl(path: Path) -> Iterator[tuple[int, dict]]:
    """The objects of a JSONL file with their line numbers (blank lines skipped).

    Raises:
        UserError: Naming the file and line of an unreadable file, a line that is not UTF-8, not
            JSON or not an object.
    """
    try:
        lines = path.read_bytes().splitlines()
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror or exc}") from None
    for lineno, raw in enumerate(lines, start=1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise UserError(
                f"{path}:{lineno}: not valid UTF-8 ({exc.reason} at byte {exc.start})",
                "save the file as UTF-8",
            ) from None
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(
                f"{path}:{lineno}: not valid JSON ({exc})", "write one JSON object per line"
            ) from None
        if not isinstance(row, dict):
            raise UserError(
                f"{path}:{lineno}: a JSON {type(row).__name__}, not an object",
                'write one object per line, e.g. {"id": "q1", "question": "..."}',
            )
        if "\\u" in line:  # only an escape can spell an unpaired surrogate ("\ud800")
            _refuse_surrogates(row, f"{path}:{lineno}")
        yield lineno, row


def _refuse_surrogates(row: dict, where: str) -> None:
    """Refuse a row holding an unpaired UTF-16 surrogate at any depth (JSON allows the escape,
    UTF-8 and Arrow do not: it would fail later, when the item is hashed or stored)."""
    for key, value in row.items():
        try:
            json.dumps([key, value], ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            shown = json.dumps(value, ensure_ascii=True)[:40]
            raise UserError(
                f"{where}: field {key!r} holds an unpaired surrogate escape ({shown})",
                "write the character itself or a valid surrogate pair",
            ) from None


def plain_item(
    row: dict, cols: ColumnMap, *, task: str, item_id: str, split: str | None, seed: int
) -> Item:
    """The one rule that turns a plain task row into an `Item`.

    The split is the row's split column when set, else ``split``, else the seeded 50/50 split by
    item id (`assign_role`). Choices (when the map names a column) are appended to the question as
    lettered options unless the question already lists them.

    Args:
        row: The raw row (the question column is known to be present).
        cols: Column names.
        task: Task name.
        item_id: The row's item id.
        split: Split of rows without a split column (None: seeded 50/50).
        seed: Seed of the 50/50 split.

    Returns:
        The item (answers may be empty; callers that need gold answers check).
    """
    row_split = row.get(cols.split) if cols.split is not None else None
    item_split = str(row_split) if row_split else (split or assign_role(item_id, seed))
    choices = _as_list(row.get(cols.choices)) if cols.choices is not None else []
    question = str(row[cols.question])
    if choices and "\nA. " not in question:
        question = format_mc(question, choices)
    answers = _as_list(row.get(cols.answers))
    return Item(task, item_id, question, tuple(answers), item_split, tuple(choices) or None)


def check_plain_row(row: dict, cols: ColumnMap, where: str) -> None:
    """Refuse the values of a plain task row that would become wrong items silently.

    The question must be a non-blank string (a null question used to become the text "None");
    the id, when the file has one, a non-blank string or an integer; the answers a string, a
    number or a list of them (a list may be empty; null is refused: it says the gold answer was
    lost, not that there is none); the split, when set, a string.

    Args:
        row: The raw row.
        cols: Its column names (columns the file lacks are None).
        where: `FILE:LINE` (or `FILE: row N`), for the message.

    Raises:
        UserError: Naming the file, the line and the field.
    """
    question = row.get(cols.question)
    if not isinstance(question, str) or not question.strip():
        shown = "blank" if isinstance(question, str) else f"{_json(question)}, not a string"
        raise UserError(
            f"{where}: field {cols.question!r} is {shown}", "give every item its question text"
        )
    if cols.id is not None and cols.id in row:
        item_id = row[cols.id]
        ok = (isinstance(item_id, int) and not isinstance(item_id, bool)) or (
            isinstance(item_id, str) and item_id.strip() != ""
        )
        if not ok:
            raise UserError(
                f"{where}: field {cols.id!r} is {_json(item_id)}",
                "give every item a non-blank string or integer id",
            )
    if cols.answers in row:
        answers = row[cols.answers]
        values = answers if isinstance(answers, list) else [answers]
        if answers is None or not all(_is_answer(v) for v in values):
            raise UserError(
                f"{where}: field {cols.answers!r} is {_json(answers)}",
                'give a list of strings (e.g. ["Paris"]), one string or number, or [] for none',
            )
    if cols.split is not None and row.get(cols.split) is not None:
        if not isinstance(row[cols.split], str):
            raise UserError(
                f"{where}: field {cols.split!r} is {_json(row[cols.split])}, not a string",
                'write the split as text, e.g. "train" or "test"',
            )


def _is_answer(value: object) -> bool:
    return isinstance(value, str) or (
        isinstance(value, int | float) and not isinstance(value, bool)
    )


def _json(value: object) -> str:
    """A short rendering of a raw JSON value for a message."""
    text = json.dumps(value, ensure_ascii=True, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def _as_list(value: object) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                return [str(v) for v in json.loads(text)]
            except json.JSONDecodeError:
                pass
        return [text] if text else []
    if isinstance(value, (list, tuple, np.ndarray)):
        return [str(v) for v in value]
    return [str(value)]


def load_local_task(
    path: str | Path,
    *,
    task: str | TaskSpec | None = None,
    name: str | None = None,
    role: str = "train",
    columns: ColumnMap | None = None,
    split: str | None = None,
    seed: int = DEFAULT_SEED,
    limit: int | None = DEFAULT_LIMIT,
) -> list[Item]:
    """Load one role of a task from a local JSONL / JSON / Parquet / CSV file.

    Args:
        path: The task file.
        task: A registry task whose raw hub fields the file has (hub-export shape); None for the
            plain shape.
        name: Task name for the items (default: the registry name, else the file stem).
        role: "train" or "test": which items to return.
        columns: Column names of a plain file (default `ColumnMap()`).
        split: For files without a split column: the role of every row; None gives the seeded
            50/50 split by item id.
        seed: Shuffle and 50/50-split seed.
        limit: Item limit after shuffling.

    Returns:
        The items of that role, shuffled and limited.

    Raises:
        UserError: Missing question / answer column, empty task, duplicate ids (naming the file and
            the column), or an unknown role.
    """
    _check_role(role)
    path = Path(path)
    rows, labels = read_labelled_rows(path)
    if not rows:
        raise UserError(f"{path}: the task file is empty", "add at least one item")
    if task is not None:
        spec = task if isinstance(task, TaskSpec) else get_task(task)
        source = spec.sources[0]
        needed = (*source.question_fields, source.answer_field)
        _require_columns(path, rows[0], needed)
        items = _build_rows(rows, source, name or spec.name, "", split, seed, labels)
        id_column = source.id_field or "row number"
    else:
        cols = columns or ColumnMap()
        _require_columns(path, rows[0], (cols.question, cols.answers))
        present = set().union(*(row.keys() for row in rows))
        has_split = cols.split is not None and cols.split in present
        has_id = cols.id is not None and cols.id in present
        has_choices = cols.choices is not None and cols.choices in present
        task_name = name or path.stem
        present_cols = dataclasses.replace(
            cols,
            split=cols.split if has_split else None,
            choices=cols.choices if has_choices else None,
        )
        items = []
        for n, row in enumerate(rows):
            _require_columns(path, row, (cols.question, cols.answers), row_number=n + 1)
            if has_id and row.get(cols.id) in (None, ""):
                raise UserError(f"{path}: row {n + 1} has no item id in column {cols.id!r}")
            check_plain_row(row, present_cols, labels[n])
            item_id = str(row[cols.id]) if has_id else str(n)
            item = plain_item(
                row, present_cols, task=task_name, item_id=item_id, split=split, seed=seed
            )
            if not item.answers:
                raise UserError(
                    f"{path}: item {item_id!r} has no gold answer in column {cols.answers!r}"
                )
            items.append(item)
        id_column = cols.id if has_id else "row number"
    _check_items(items, str(path), id_column)
    chosen = [it for it in items if it.split == role]
    if not chosen:
        raise UserError(f"{path}: no items with split {role!r}", "check the split column or values")
    return shuffle_and_limit(chosen, seed=seed, limit=limit)


def _require_columns(
    path: Path, row: dict, needed: Iterable[str], row_number: int | None = None
) -> None:
    where = f" in row {row_number}" if row_number is not None else ""
    for column in needed:
        if column not in row:
            raise UserError(
                f"{path}: missing column {column!r}{where} (columns: {', '.join(map(str, row))})",
                "map the column with ColumnMap / the task's column mapping",
            )


def load_task(
    task: str | TaskSpec,
    role: str = "train",
    *,
    path: str | Path | None = None,
    seed: int = DEFAULT_SEED,
    limit: int | None = DEFAULT_LIMIT,
    **local: Any,
) -> list[Item]:
    """Load a task from ``path`` when given, else from the hub.

    A local file of a registry task is read in the hub-export shape when its first row has the
    task's raw hub fields (and no ``columns`` mapping is given), else in the plain shape.

    Args:
        task: Registry name or spec (or, with ``path``, any name for a plain file).
        role: "train" or "test".
        path: A local task file.
        seed: Shuffle seed.
        limit: Item limit.
        **local: Further arguments of `load_local_task` (``columns``, ``split``).

    Returns:
        The items.
    """
    if path is None:
        return load_hub_task(task, role, seed=seed, limit=limit)
    spec = task if isinstance(task, TaskSpec) else _registered(task)
    if spec is not None and "columns" not in local and _has_hub_fields(path, spec):
        return load_local_task(path, task=spec, role=role, seed=seed, limit=limit, **local)
    name = spec.name if spec is not None else str(task)
    return load_local_task(path, name=name, role=role, seed=seed, limit=limit, **local)


def _has_hub_fields(path: str | Path, spec: TaskSpec) -> bool:
    rows = read_rows(path)
    source = spec.sources[0]
    return bool(rows) and all(f in rows[0] for f in (*source.question_fields, source.answer_field))


def _registered(name: str) -> TaskSpec | None:
    try:
        return get_task(name)
    except UserError:
        return None


# ---- sweep tasks (`[[tasks]]` of a sweep spec) ---------------------------------------------------


def load_items(task: SweepTask) -> dict[str, list[Item]]:
    """Load a sweep task's items grouped by split, in file order, honouring `splits` and `limit`.

    The rows are read and turned into items by the same code as `load_local_task` (`read_jsonl`,
    `plain_item`: no split column -> the seeded 50/50 split by item id); a sweep keeps the file's
    order (no shuffle) so a run's units stay the same when the file grows at the end.

    Args:
        task: The sweep spec's task entry (`source` is `builtin:NAME` or a JSONL file).

    Returns:
        Split name -> items (every split of `task.splits`, possibly empty).

    Raises:
        UserError: The file is unreadable, a line is not JSON, a column is missing or an id repeats.
    """
    from engine.tasks.builtin import builtin_task_path

    kind, name = parse_source(task.source)
    path = builtin_task_path(name) if kind == "builtin" else Path(task.source)
    cols = ColumnMap(
        id=task.id_column, question=task.question_column, split=task.split_column, choices=None
    )
    by_split: dict[str, list[Item]] = {split: [] for split in task.splits}
    folded = {split.strip().casefold(): split for split in task.splits}
    skipped: dict[str, tuple[int, int]] = {}  # unknown split -> (items, first line)
    seen: set[str] = set()
    for lineno, row in read_jsonl(path):
        for column in (task.id_column, task.question_column):
            if column not in row:
                which = "id" if column == task.id_column else "question"
                raise UserError(
                    f"{path}:{lineno}: missing column '{column}'",
                    f"add it, or map another column with tasks.{task.name}.{which}_column",
                )
        check_plain_row(row, cols, f"{path}:{lineno}")
        item_id = str(row[task.id_column])
        if item_id in seen:
            raise UserError(f"{path}:{lineno}: item id '{item_id}' repeats", "make ids unique")
        seen.add(item_id)
        item = plain_item(row, cols, task=task.name, item_id=item_id, split=None, seed=DEFAULT_SEED)
        items = by_split.get(item.split)
        if items is None:
            near = folded.get(item.split.strip().casefold())
            if near is not None:  # "Train" for "train": a typo, not a split to leave out
                raise UserError(
                    f"{path}:{lineno}: field '{task.split_column}' is {item.split!r}, which "
                    f"differs from the split {near!r} of tasks.{task.name}.splits only in case "
                    "or spaces",
                    f"write {near!r} in the file, or list {item.split!r} in the splits",
                )
            if item.split not in KNOWN_SPLITS:
                count, first = skipped.get(item.split, (0, lineno))
                skipped[item.split] = (count + 1, first)
            continue
        if task.limit and len(items) >= task.limit:
            continue
        items.append(item)
    for split, (count, first) in skipped.items():
        # Items of a split the spec does not ask for are left out on purpose (splits = ["test"]);
        # a split name outside the usual ones is more likely a typo, so it is said once.
        logger.warning(
            f"{path}:{first}: {count} item(s) with split {split!r} are skipped: "
            f"tasks.{task.name}.splits is {list(task.splits)}"
        )
    empty = [split for split, items in by_split.items() if not items]
    if empty:
        # Most often a typo in `splits` or the wrong file: a sweep would silently skip it.
        raise UserError(
            f"{path}: task '{task.name}' has no items in split '{empty[0]}'",
            f"check tasks.{task.name}.splits / split_column ('{task.split_column}') and the file",
        )
    return by_split
