"""Registry of the tasks of the seed study (11) and of MarCon (7).

Each task is a frozen `TaskSpec` with one or more `Source`s (a Hugging Face dataset and config) and a
*builder* - the name of a function in `engine.tasks.loaders.BUILDERS` that turns one raw row into
items (question text with the options for multiple choice, gold answers, choices).

Dataset ids, configs, splits and field names of the seed tasks follow the seed study's loaders; the
MarCon tasks use the standard hub copies of each dataset. Deliberate differences from the seed:

- Multiple choice is always lettered (A, B, C, ...) with the letter as the gold answer; the seed
  numbers MMLU's options and shuffles SciQ's options unseeded - ours shuffles them with a per-item seed.
- Hidden test labels: SuperGLUE (BoolQ, RTE), WNLI, AmbigNQ and CommonsenseQA use their validation
  split as "test"; rows whose label is missing (-1 / None) are dropped.
- Tasks with no second split (PopQA, SelfAware, SimpleQA, TruthfulQA, HaluEval) get a seeded 50/50
  split by item id (`engine.tasks.loaders.assign_role`).
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.errors import UserError

ANSWER_TYPES = ("free", "mc", "yesno", "number")

INSTRUCTIONS = {
    "free": "Answer the following question.",
    "mc": "Answer the following multiple-choice question with the letter of the correct option.",
    "yesno": "Answer the following question with yes or no.",
    "number": "Solve the following problem and state the final numeric answer.",
}


@dataclass(frozen=True)
class Source:
    """One hub dataset (and config) feeding a task.

    Attributes:
        hf_id: Hugging Face dataset id.
        config: Dataset config name, or None.
        builder: Name of the row builder in `engine.tasks.loaders.BUILDERS`.
        train_split: Hub split that plays "train" (the reference split).
        test_split: Hub split that plays "test", or None for a seeded 50/50 split of ``train_split``.
        question_fields: Raw fields the question text is built from (documentation and validation).
        answer_field: Raw field holding the gold answer(s) or label.
        id_field: Raw field with a native item id, or None (ids are then split + row number).
    """

    hf_id: str
    config: str | None
    builder: str
    train_split: str
    test_split: str | None
    question_fields: tuple[str, ...]
    answer_field: str
    id_field: str | None = None


@dataclass(frozen=True)
class TaskSpec:
    """A registered task.

    Attributes:
        name: Registry name (lowercase, used in runs and tables).
        studies: Which studies use it: "seed", "marcon".
        answer_type: "free", "mc", "yesno" or "number" (selects the rule-based correctness matcher).
        sources: The hub datasets that make up the task (several for HaluEval and SuperGLUE).
        instruction: The per-task instruction placed before the question.
        description: One line on what the task is.
    """

    name: str
    studies: tuple[str, ...]
    answer_type: str
    sources: tuple[Source, ...]
    instruction: str
    description: str = ""

    @property
    def hf_id(self) -> str:
        """The hub id of the first source."""
        return self.sources[0].hf_id

    @property
    def config(self) -> str | None:
        """The config of the first source."""
        return self.sources[0].config

    @property
    def has_test_split(self) -> bool:
        """Whether every source has its own test split (else a seeded 50/50 split is used)."""
        return all(s.test_split is not None for s in self.sources)


def _task(
    name: str, studies: tuple[str, ...], answer_type: str, *sources: Source, **kw
) -> TaskSpec:
    instruction = kw.pop("instruction", INSTRUCTIONS[answer_type])
    return TaskSpec(name, studies, answer_type, tuple(sources), instruction, **kw)


_SEED = ("seed",)
_MARCON = ("marcon",)
_BOTH = ("seed", "marcon")

_HALUEVAL = tuple(
    Source("pminervini/HaluEval", cfg, f"halueval_{kind}", "data", None, q, "hallucination")
    for cfg, kind, q in (
        ("dialogue_samples", "dialogue", ("dialogue_history", "response")),
        ("general", "general", ("user_query", "chatgpt_response")),
        ("qa_samples", "qa", ("question", "answer")),
        ("summarization_samples", "summarization", ("document", "summary")),
    )
)

TASKS: dict[str, TaskSpec] = {
    t.name: t
    for t in (
        # ---- seed study (11) ----
        _task(
            "popqa",
            _SEED,
            "free",
            Source(
                "akariasai/PopQA",
                None,
                "popqa",
                "test",
                None,
                ("question",),
                "possible_answers",
                "id",
            ),
            description="Long-tail entity questions; relations director, screenwriter, producer, "
            "author, place of birth, occupation; objects longer than 2 characters.",
        ),
        _task(
            "selfaware",
            _SEED,
            "free",
            Source(
                "OkayestProgrammer/selfAware",
                None,
                "selfaware",
                "train",
                None,
                ("question",),
                "answer",
            ),
            description="Answerable and unanswerable questions; gold 'unanswerable' for the latter.",
        ),
        _task(
            "simpleqa",
            _SEED,
            "free",
            Source("basicv8vc/SimpleQA", None, "simpleqa", "test", None, ("problem",), "answer"),
            description="Short fact-seeking questions with one indisputable answer.",
        ),
        _task(
            "truthfulqa",
            _SEED,
            "free",
            Source(
                "truthfulqa/truthful_qa",
                "generation",
                "truthfulqa",
                "validation",
                None,
                ("question",),
                "correct_answers",
            ),
            description="Questions that invite common misconceptions (generation config).",
        ),
        _task(
            "halueval",
            _SEED,
            "yesno",
            *_HALUEVAL,
            instruction="Answer yes or no: does the response contain a hallucination?",
            description="Hallucination detection over dialogue, general, qa and summarization samples.",
        ),
        _task(
            "ambignq",
            _SEED,
            "free",
            Source(
                "sewon/ambig_qa",
                "light",
                "ambignq",
                "train",
                "validation",
                ("question",),
                "annotations",
                "id",
            ),
            description="Ambiguous open-domain questions; multi-answer rows expand into one item per "
            "disambiguated question.",
        ),
        _task(
            "wnli",
            _SEED,
            "yesno",
            Source(
                "SetFit/wnli", None, "wnli", "train", "validation", ("text1", "text2"), "label_text"
            ),
            instruction="Answer yes or no: does the premise entail the hypothesis?",
            description="Winograd NLI as premise / hypothesis entailment.",
        ),
        _task(
            "mmlu",
            _BOTH,
            "mc",
            Source(
                "cais/mmlu",
                "all",
                "mmlu",
                "auxiliary_train",
                "test",
                ("question", "choices"),
                "answer",
            ),
            description="57-subject multiple choice (4 options).",
        ),
        _task(
            "sciq",
            _SEED,
            "mc",
            Source(
                "allenai/sciq",
                None,
                "sciq",
                "train",
                "test",
                ("question", "distractor1", "distractor2", "distractor3", "correct_answer"),
                "correct_answer",
            ),
            description="Science exam questions; the correct answer and three distractors, shuffled "
            "per item with a seed.",
        ),
        _task(
            "arc_challenge",
            _SEED,
            "mc",
            Source(
                "allenai/ai2_arc",
                "ARC-Challenge",
                "arc",
                "train",
                "test",
                ("question", "choices"),
                "answerKey",
                "id",
            ),
            description="Grade-school science, challenge set.",
        ),
        _task(
            "superglue",
            _SEED,
            "yesno",
            Source(
                "aps/super_glue",
                "boolq",
                "superglue_boolq",
                "train",
                "validation",
                ("passage", "question"),
                "label",
                "idx",
            ),
            Source(
                "aps/super_glue",
                "rte",
                "superglue_rte",
                "train",
                "validation",
                ("premise", "hypothesis"),
                "label",
                "idx",
            ),
            description="SuperGLUE BoolQ and RTE (as yes / no entailment).",
        ),
        # ---- MarCon (7; MMLU above is shared) ----
        _task(
            "boolq",
            _MARCON,
            "yesno",
            Source(
                "google/boolq",
                None,
                "boolq",
                "train",
                "validation",
                ("passage", "question"),
                "answer",
            ),
            description="Yes / no questions about a Wikipedia passage.",
        ),
        _task(
            "strategyqa",
            _MARCON,
            "yesno",
            Source(
                "ChilleD/StrategyQA",
                None,
                "strategyqa",
                "train",
                "test",
                ("question",),
                "answer",
                "qid",
            ),
            description="Yes / no questions needing implicit multi-step reasoning.",
        ),
        _task(
            "gsm8k",
            _MARCON,
            "number",
            Source("openai/gsm8k", "main", "gsm8k", "train", "test", ("question",), "answer"),
            description="Grade-school math word problems; gold after '####'.",
        ),
        _task(
            "commonsenseqa",
            _MARCON,
            "mc",
            Source(
                "tau/commonsense_qa",
                None,
                "commonsenseqa",
                "train",
                "validation",
                ("question", "choices"),
                "answerKey",
                "id",
            ),
            description="Commonsense multiple choice (5 options).",
        ),
        _task(
            "medmcqa",
            _MARCON,
            "mc",
            Source(
                "openlifescienceai/medmcqa",
                None,
                "medmcqa",
                "train",
                "validation",
                ("question", "opa", "opb", "opc", "opd"),
                "cop",
                "id",
            ),
            description="Medical entrance exam multiple choice (4 options).",
        ),
        _task(
            "casehold",
            _MARCON,
            "mc",
            Source(
                "casehold/casehold",
                "all",
                "casehold",
                "train",
                "test",
                ("citing_prompt", "holding_0", "holding_1", "holding_2", "holding_3", "holding_4"),
                "label",
                "example_id",
            ),
            instruction="Choose the holding that the cited case supports; answer with its letter.",
            description="Legal holdings: pick the holding of the cited case (5 options).",
        ),
    )
}

SEED_TASKS = tuple(name for name, t in TASKS.items() if "seed" in t.studies)
MARCON_TASKS = tuple(name for name, t in TASKS.items() if "marcon" in t.studies)


def get_task(name: str) -> TaskSpec:
    """Look a task up by registry name (case-insensitive; '-' and '_' are interchangeable).

    Args:
        name: Registry name, e.g. "sciq" or "ARC-Challenge".

    Returns:
        The task spec.

    Raises:
        UserError: For an unknown name.
    """
    key = name.strip().lower().replace("-", "_")
    if key not in TASKS:
        raise UserError(f"unknown task {name!r}", f"use one of: {', '.join(sorted(TASKS))}")
    return TASKS[key]
