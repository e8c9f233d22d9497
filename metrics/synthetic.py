"""Seeded synthetic scored runs with realistic shapes (the bundled example and the benchmarks).

Markers follow a Zipf frequency; each marker has an intrinsic confidence level that shifts a
little by task; confidences are consistency-style multiples of 1/K; a response has 1-3 sentences,
about 40% of sentences carry no hedge and some carry two markers. Vectorized: 1e7 rows in seconds.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from engine.contract import NO_HEDGE

MARKERS = [
    "probably",
    "likely",
    "i think",
    "i believe",
    "possibly",
    "perhaps",
    "maybe",
    "certainly",
    "definitely",
    "i'm not sure",
    "it seems",
    "i'm fairly sure",
    "almost certainly",
    "might",
    "could be",
    "i'm confident",
    "without a doubt",
    "it appears",
    "presumably",
    "unlikely",
    "i suspect",
    "clearly",
    "surely",
    "i guess",
    "apparently",
    "most likely",
    "conceivably",
    "i'm quite sure",
    "it is possible",
    "in all likelihood",
    "arguably",
    "supposedly",
    "undoubtedly",
    "i'm uncertain",
    "reportedly",
    "seemingly",
    "i assume",
    "doubtless",
    "it is unclear",
    "i would say",
]
TASKS = [
    "arc_challenge",
    "mmlu",
    "sciq",
    "popqa",
    "truthfulqa",
    "wnli",
    "boolq",
    "gsm8k",
    "simpleqa",
    "selfaware",
]


def make_scored_run(
    *,
    n_models: int = 1,
    n_tasks: int = 5,
    n_items: int = 300,
    n_markers: int = 40,
    seed: int = 0,
    test_fraction: float = 0.34,
    tasks_without_test: int = 2,
    missing_rate: float = 0.03,
    consistency_k: int = 20,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Generate (responses, sentences) tables in the scored-run contract.

    Args:
        n_models: models (one prompt each, named "default").
        n_tasks: tasks (names from a fixed list, then task10, task11, ...).
        n_items: items per task (per model).
        n_markers: distinct markers besides `<no_hedge>`.
        seed: the seed; same seed, same tables.
        test_fraction: share of items in the "test" split, for tasks that have one.
        tasks_without_test: the last tasks only have a "train" split (the analysis splits them).
        missing_rate: share of sentences whose confidence (and, separately, decisiveness) is missing.
        consistency_k: confidences are multiples of 1/K, like the seed's K sampled judgments.
    """
    rng = np.random.default_rng(seed)
    names = (MARKERS + [f"marker {i}" for i in range(len(MARKERS), n_markers)])[:n_markers]
    tasks = (TASKS + [f"task{i}" for i in range(len(TASKS), n_tasks)])[:n_tasks]
    level = rng.uniform(0.25, 0.95, size=n_markers)  # intrinsic confidence per marker
    shift = rng.normal(0, 0.08, size=(n_models, n_tasks, n_markers))
    zipf = 1.0 / np.arange(1, n_markers + 1) ** 1.1
    zipf /= zipf.sum()
    task_acc = rng.uniform(0.3, 0.85, size=(n_models, n_tasks))

    # Responses.
    n_resp = n_models * n_tasks * n_items
    model_idx = np.repeat(np.arange(n_models), n_tasks * n_items)
    task_idx = np.tile(np.repeat(np.arange(n_tasks), n_items), n_models)
    item_idx = np.tile(np.arange(n_items), n_models * n_tasks)
    is_test = (item_idx < int(round(test_fraction * n_items))) & (
        task_idx < n_tasks - tasks_without_test
    )
    n_sent = rng.integers(1, 4, size=n_resp)

    # Sentences: one row per sentence first, then extra marker rows.
    resp_of_sent = np.repeat(np.arange(n_resp), n_sent)
    starts = np.cumsum(n_sent) - n_sent
    sent_idx = np.arange(len(resp_of_sent)) - np.repeat(starts, n_sent)
    n_s = len(resp_of_sent)
    hedged = rng.random(n_s) < 0.6
    marker = np.where(hedged, rng.choice(n_markers, size=n_s, p=zipf), -1)
    second = hedged & (rng.random(n_s) < 0.15)
    m2 = rng.choice(n_markers, size=n_s, p=zipf)
    second &= m2 != marker
    mi, ti = model_idx[resp_of_sent], task_idx[resp_of_sent]
    mean = np.where(
        hedged, level[np.maximum(marker, 0)] + shift[mi, ti, np.maximum(marker, 0)], 0.7
    )
    raw = np.clip(mean + rng.normal(0, 0.15, size=n_s), 0, 1)
    conf = np.round(raw * consistency_k) / consistency_k
    conf[rng.random(n_s) < missing_rate] = np.nan
    dec = np.clip(
        np.where(hedged, level[np.maximum(marker, 0)], 0.9) + rng.normal(0, 0.1, size=n_s), 0, 1
    )
    dec[rng.random(n_s) < missing_rate] = np.nan
    # Correctness follows the task's accuracy and, a little, the response's confidence.
    resp_conf = np.bincount(resp_of_sent, weights=np.nan_to_num(raw), minlength=n_resp) / n_sent
    p_correct = np.clip(task_acc[model_idx, task_idx] + 0.3 * (resp_conf - 0.6), 0.02, 0.98)
    correct = rng.random(n_resp) < p_correct

    rows = np.concatenate([np.arange(n_s), np.flatnonzero(second)])
    row_marker = np.concatenate([marker, m2[second]])
    marker_names = np.array([*names, NO_HEDGE], dtype=object)
    model_names = np.array([f"model-{i}" for i in range(n_models)], dtype=object)
    task_names = np.array(tasks, dtype=object)
    split_names = np.array(["train", "test"], dtype=object)
    item_names = np.array([f"q{i:06d}" for i in range(n_items)], dtype=object)

    responses = pl.DataFrame(
        {
            "model": model_names[model_idx],
            "task": task_names[task_idx],
            "split": split_names[is_test.astype(int)],
            "prompt": np.full(n_resp, "default", dtype=object),
            "item_id": item_names[item_idx],
            "correct": correct,
            "n_sentences": n_sent.astype(np.int32),
        }
    )
    r = resp_of_sent[rows]
    names_col = marker_names[np.where(row_marker < 0, n_markers, row_marker)]
    sentences = pl.DataFrame(
        {
            "model": model_names[model_idx[r]],
            "task": task_names[task_idx[r]],
            "split": split_names[is_test[r].astype(int)],
            "prompt": np.full(len(rows), "default", dtype=object),
            "item_id": item_names[item_idx[r]],
            "sentence_idx": sent_idx[rows].astype(np.int32),
            "marker": names_col,
            "raw_marker": names_col,
            "confidence": conf[rows],
            "decisiveness": dec[rows],
        }
    ).with_columns(pl.col("confidence", "decisiveness").fill_nan(None))
    sentences = sentences.sort(["model", "task", "item_id", "sentence_idx", "marker"])
    return responses, sentences
