"""Known-truth populations: simulate scored runs and compute every metric's exact population value.

A `Population` fixes, per task, the true confidence level of every marker, how often each marker
is used (a long tail is the default), how many sentences a response has, how often a sentence
carries two markers, how noisy a sentence's confidence is around its level (Beta distributed),
how often confidence is missing, and the planted accuracy and faithfulness. `sample` draws a
scored run from it (any number of items per task, one or more models on the same items), in the
scored-run contract, ready for `metrics.analyze`; `population_values` returns what every metric
converges to as the number of items per task grows without bound, with the same tasks, markers
and held-out protocol: the estimand of the intervals in `metrics.json`.

    from metrics import analyze
    from metrics.simulate import Population, population_values, sample

    pop = Population.example()
    run = sample(pop, n_items=300, seed=1)
    result = analyze(run, bootstrap=400)
    truth = population_values(pop)

How the population values are exact (no Monte Carlo):

* A sentence has one of three kinds: no marker (`<no_hedge>`, level `no_hedge_level[t]`), one
  marker i (level `mic[t, i]`), or two markers i != j (first i with probability `freq[i]`, then j
  with probability `freq[j] / (1 - freq[i])`; level the mean of both levels). Its confidence is
  Beta with that mean and concentration `concentration`, shared by its marker rows. A marker's
  population MIC is the mean level over its rows (equal to `mic[t, m]` without two-marker
  sentences). Missing confidences are missing completely at random.
* MAE Modes 1 and 3 need E|a - C| for a Beta C: l - a + 2 (a I_a(al, be) - l I_a(al + 1, be)),
  I the regularized incomplete beta function. Mode 4 needs only the population MICs: its
  diagonal (I-AvgMAE Mode 4) is exactly 0, as the reference and evaluation halves of a task come
  from one population. Mode 2 (mean over responses of the response's mean row error) is a finite
  sum over the number of sentences and how many of them are scored with one or two rows.
* Correctness is Bernoulli(accuracy[t]), independent of everything else. A response's
  faithfulness f(r) is drawn uniformly in faithfulness[t] +- faithfulness_spread and its
  sentences' decisiveness is placed at the distance from their confidence that makes f(r) come
  out exactly, so f is independent of the response's confidence: every cMFG bin has mean
  faithfulness[t], and cMFG = MFG = faithfulness[t].
* Correlation metrics are the correlations of the population vectors; the Spearman variants
  of MRC, MAC and MCC on smoothed ranks at the analysis' rank resolution h (`rank_resolution`,
  default `metrics.seven.RANK_RESOLUTION`; 0 gives the ordinary ranks). "-sig" keeps the task
  pairs (MRC) or markers (MAC, MCC) whose population correlation would be significant at
  p < 0.05 with the same number of markers (tasks): the limit of the sample's selection, which
  is well defined except for a correlation exactly at the threshold.

The marker set is part of the estimand: pass `valid` (the analysis' valid markers per task) to
get the population values over the same markers, so that a rare marker that misses the count
threshold in a small sample changes the question consistently on both sides.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from math import comb

import numpy as np
import polars as pl
from scipy import special

from engine.contract import NO_HEDGE
from engine.errors import UserError
from metrics.io import ScoredRun, validate
from metrics.seven import RANK_RESOLUTION, Metric, seven_metrics


@dataclass(frozen=True)
class Population:
    """A known-truth population of responses (see the module docstring).

    Attributes:
        mic: [T, M] confidence level of a sentence carrying marker m alone, in task t.
        marker_freq: [M] probability that a hedged sentence's (first) marker is m.
        accuracy: [T] probability that a response is correct.
        faithfulness: [T] mean faithfulness f(r) of a response (cMFG and MFG).
        no_hedge_level: [T] confidence level of a sentence without a marker.
        hedge_rate: share of sentences carrying a marker.
        sentences: probabilities of 1, 2, ... sentences per response.
        multi_marker: share of hedged sentences carrying a second marker.
        concentration: Beta concentration kappa of a sentence's confidence (variance
            l (1 - l) / (kappa + 1) around its level l): the confidence noise.
        missing: share of sentences whose confidence (and decisiveness) is missing.
        faithfulness_spread: half-width of the uniform spread of f(r) around faithfulness[t].
        tasks, markers: names (default task0.., marker0..).
    """

    mic: np.ndarray
    marker_freq: np.ndarray
    accuracy: np.ndarray
    faithfulness: np.ndarray
    no_hedge_level: np.ndarray
    hedge_rate: float = 0.6
    sentences: tuple[float, ...] = (1 / 3, 1 / 3, 1 / 3)
    multi_marker: float = 0.15
    concentration: float = 20.0
    missing: float = 0.03
    faithfulness_spread: float = 0.04
    tasks: tuple[str, ...] = field(default=())
    markers: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        mic = np.asarray(self.mic, dtype=np.float64)
        T, M = mic.shape
        freq = np.asarray(self.marker_freq, dtype=np.float64)
        set_ = object.__setattr__
        set_(self, "mic", mic)
        set_(self, "marker_freq", freq / freq.sum())
        for name in ("accuracy", "faithfulness", "no_hedge_level"):
            v = np.broadcast_to(np.asarray(getattr(self, name), dtype=np.float64), (T,)).copy()
            set_(self, name, v)
        set_(self, "sentences", tuple(float(p) / sum(self.sentences) for p in self.sentences))
        if not self.tasks:
            set_(self, "tasks", tuple(f"task{t}" for t in range(T)))
        if not self.markers:
            set_(self, "markers", tuple(f"marker{m}" for m in range(M)))
        checks = [
            (freq.shape == (M,) and (freq > 0).all(), "marker_freq", "M positive numbers"),
            (((mic > 0) & (mic < 1)).all(), "mic", "levels strictly inside (0, 1)"),
            (((self.no_hedge_level > 0) & (self.no_hedge_level < 1)).all(), "no_hedge_level",
             "levels strictly inside (0, 1)"),
            (((self.accuracy >= 0) & (self.accuracy <= 1)).all(), "accuracy", "values in [0, 1]"),
            (len(self.tasks) == T and len(self.markers) == M, "tasks/markers", "T and M names"),
            (0 < self.hedge_rate <= 1, "hedge_rate", "a share in (0, 1]"),
            (0 <= self.multi_marker <= 1 and (M >= 2 or self.multi_marker == 0), "multi_marker",
             "a share in [0, 1] (0 with one marker)"),
            (0 <= self.missing < 1, "missing", "a share in [0, 1)"),
            (self.concentration > 0, "concentration", "a positive number"),
        ]  # fmt: skip
        # Decisiveness sits at distance (1 - f(r)) n / k from confidence (k of n sentences
        # valid); a distance <= 0.5 always fits in [0, 1] on one side.
        worst = len(self.sentences) if self.missing > 0 else 1
        lowest = self.faithfulness - self.faithfulness_spread
        checks.append(
            (((1 - lowest) * worst <= 0.5).all() and (self.faithfulness + self.faithfulness_spread
             <= 1).all(), "faithfulness",
             f"faithfulness - spread >= {1 - 0.5 / worst:.3f} and faithfulness + spread <= 1")
        )  # fmt: skip
        for ok, name, want in checks:
            if not ok:
                raise UserError(f"Population: field {name!r} is out of range", f"use {want}")

    @classmethod
    def example(
        cls,
        n_tasks: int = 4,
        n_markers: int = 10,
        *,
        seed: int = 0,
        task_shift: float = 0.08,
        zipf: float = 0.8,
        **kwargs,
    ) -> Population:
        """A seeded population with realistic shapes.

        Marker levels spread over [0.3, 0.9] and shift by task (normal, sd `task_shift`; 0 gives
        a model whose markers mean the same in every task, so C-AvgMAE Mode 4 is 0 too); marker
        frequencies follow a Zipf law with exponent `zipf` (the long tail); accuracy and
        faithfulness differ by task. Other fields as keyword arguments.
        """
        rng = np.random.default_rng(seed)
        level = rng.uniform(0.3, 0.9, size=n_markers)
        mic = np.clip(level + rng.normal(0, task_shift, size=(n_tasks, n_markers)), 0.05, 0.95)
        freq = 1.0 / np.arange(1, n_markers + 1) ** zipf
        args = dict(
            mic=mic,
            marker_freq=freq,
            accuracy=rng.uniform(0.35, 0.85, size=n_tasks),
            faithfulness=rng.uniform(0.88, 0.95, size=n_tasks),
            no_hedge_level=rng.uniform(0.65, 0.8, size=n_tasks),
        )
        args.update(kwargs)
        return cls(**args)

    # ---- the sentence kinds of one task -------------------------------------------------------

    def kinds(self, t: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Sentence kinds of task t (present confidence): probability, level, markers [K, 2].

        Marker index M is `<no_hedge>`; -1 pads one-marker kinds.
        """
        M = len(self.marker_freq)
        p, mu, h, q = self.marker_freq, self.mic[t], self.hedge_rate, self.multi_marker
        prob = [1.0 - h, *(h * (1 - q) * p)]
        level = [self.no_hedge_level[t], *mu]
        marks = [(M, -1), *((i, -1) for i in range(M))]
        if q > 0:
            for i, j in itertools.permutations(range(M), 2):
                prob.append(h * q * p[i] * p[j] / (1 - p[i]))
                level.append((mu[i] + mu[j]) / 2)
                marks.append((i, j))
        return np.array(prob), np.array(level), np.array(marks, dtype=np.int64)

    def population_mic(self) -> np.ndarray:
        """[T, M + 1] population MIC (the last column is `<no_hedge>`)."""
        T, M = self.mic.shape
        out = np.zeros((T, M + 1))
        for t in range(T):
            prob, level, marks = self.kinds(t)
            w = np.zeros(M + 1)
            s = np.zeros(M + 1)
            for col in (0, 1):  # a two-marker kind gives a row to each of its markers
                has = marks[:, col] >= 0
                w += np.bincount(marks[has, col], weights=prob[has], minlength=M + 1)
                s += np.bincount(marks[has, col], weights=(prob * level)[has], minlength=M + 1)
            out[t] = s / w
        return out

    @property
    def marker_names(self) -> list[str]:
        """Marker names in the column order of `population_mic` (`<no_hedge>` last)."""
        return [*self.markers, NO_HEDGE]


def _abs_dev(a: np.ndarray, level: np.ndarray, kappa: float) -> np.ndarray:
    """E|a - C| for C ~ Beta(level kappa, (1 - level) kappa), broadcasting a and level."""
    al, be = level * kappa, (1 - level) * kappa
    a = np.clip(a, 0.0, 1.0)
    return level - a + 2 * (a * special.betainc(al, be, a) - level * special.betainc(al + 1, be, a))


def population_tables(pop: Population, valid: np.ndarray | None = None):
    """Population MIC [T, M+1], accuracy [T], cMFG [T] and MAE cells {mode: [A, B]}.

    Args:
        pop: the population.
        valid: [T, M+1] markers usable in each reference task (default: all).
    """
    T, M = pop.mic.shape
    mic = pop.population_mic()
    usable = np.ones((T, M + 1), dtype=bool) if valid is None else np.asarray(valid, dtype=bool)
    mae = {mode: np.full((T, T), np.nan) for mode in (1, 2, 3, 4)}
    for b in range(T):
        prob, level, marks = pop.kinds(b)
        for a in range(T):
            # Expected error of each marker row of each kind, and whether it is scored.
            err = np.zeros(marks.shape)
            scored = np.zeros(marks.shape, dtype=bool)
            for col in (0, 1):
                m = marks[:, col]
                ok = m >= 0
                scored[ok, col] = usable[a, m[ok]]
                err[ok, col] = _abs_dev(mic[a, m[ok]], level[ok], pop.concentration)
            err = np.where(scored, err, 0.0)
            rows = scored.sum(axis=1)
            if not rows.any():
                continue
            # Mode 1: mean over scored rows.
            mae[1][a, b] = np.sum(prob * err.sum(1)) / np.sum(prob * rows)
            # Modes 3, 4: per marker, then mean over markers scored in B.
            per_w = np.zeros(M + 1)
            per_e = np.zeros(M + 1)
            for col in (0, 1):
                m = marks[:, col]
                ok = scored[:, col]
                per_w += np.bincount(m[ok], weights=prob[ok], minlength=M + 1)
                per_e += np.bincount(m[ok], weights=(prob * err[:, col])[ok], minlength=M + 1)
            has = per_w > 0
            mae[3][a, b] = np.mean(per_e[has] / per_w[has])
            mae[4][a, b] = np.mean(np.abs(mic[a, has] - mic[b, has]))
            # Mode 2: a sentence is scored with k = 0, 1 or 2 rows; given the counts per k of a
            # response's sentences, its mean error is (c1 e1 + c2 e2) / (c1 + 2 c2).
            present = 1.0 - pop.missing
            pk = np.array([pop.missing + present * np.sum(prob[rows == 0]), 0.0, 0.0])
            ek = np.zeros(3)
            for k in (1, 2):
                pk[k] = present * np.sum(prob[rows == k])
                if pk[k] > 0:
                    ek[k] = present * np.sum((prob * err.sum(1))[rows == k]) / pk[k]
            num = den = 0.0
            for n_s, p_n in enumerate(pop.sentences, start=1):
                for c1 in range(n_s + 1):
                    for c2 in range(n_s - c1 + 1):
                        if c1 + c2 == 0:
                            continue
                        c0 = n_s - c1 - c2
                        p = (
                            p_n * comb(n_s, c0) * comb(n_s - c0, c1)
                            * pk[0] ** c0 * pk[1] ** c1 * pk[2] ** c2
                        )  # fmt: skip
                        num += p * (c1 * ek[1] + c2 * ek[2]) / (c1 + 2 * c2)
                        den += p
            mae[2][a, b] = num / den
    return mic, pop.accuracy.copy(), pop.faithfulness.copy(), mae


def population_metrics(
    pop: Population, valid: np.ndarray | None = None, rank_resolution: float = RANK_RESOLUTION
) -> dict[str, Metric]:
    """Every metric of `metrics.seven` at the population (values of length 1).

    Args:
        pop: the population.
        valid: [T, M+1] markers valid in each task (columns as `Population.marker_names`).
        rank_resolution: h of the Spearman variants (0: ordinary ranks; see
            `metrics.seven.attach_rank_corrections`).
    """
    T, M = pop.mic.shape
    mic, acc, cmfg, mae = population_tables(pop, valid)
    usable = np.ones((T, M + 1), dtype=bool) if valid is None else np.asarray(valid, dtype=bool)
    shared = usable.all(axis=0)
    cells = {
        mode: (x[None], np.zeros((1, T, T)), np.where(np.isfinite(x), 1.0, 0.0)[None])
        for mode, x in mae.items()
    }
    return seven_metrics(
        mic[None], usable, shared, acc[None], cmfg[None], cells, parity=False,
        rank_resolution=rank_resolution,
    )  # fmt: skip


def population_values(
    pop: Population, valid: np.ndarray | None = None, rank_resolution: float = RANK_RESOLUTION
) -> dict[str, float | None]:
    """The population value of every metric and variant (None: undefined for this population).

    Args:
        pop: the population.
        valid: [T, M+1] markers valid in each task (default all; see the module docstring).
        rank_resolution: h of the Spearman variants of MRC, MAC and MCC: the value
            `metrics.analyze.analyze` with the same h estimates (0: the ordinary Spearman of
            the true MICs).
    """
    out = {}
    for name, metric in population_metrics(pop, valid, rank_resolution).items():
        v = None if metric.values is None else float(metric.values[0])
        out[name] = None if v is None or not np.isfinite(v) else v
    # A marker whose population MIC is the same in every task has no correlation with a task
    # property, but its sample MICs do: the sample's MAC / MCC average over a marker the
    # population leaves out, so their population value is not the limit of the estimate.
    T, M = pop.mic.shape
    usable = np.ones((T, M + 1), dtype=bool) if valid is None else np.asarray(valid, dtype=bool)
    shared = usable.all(axis=0)
    mic = pop.population_mic()[:, shared]
    if T >= 2 and mic.size and (np.ptp(mic, axis=0) < 1e-12).any():
        for name in out:
            if name.startswith(("MAC", "MCC")):
                out[name] = None
    return out


# ---------------------------------------------------------------------------------- sampling


def sample(
    pops: Population | dict[str, Population],
    n_items: int,
    seed: int,
    *,
    prompt: str = "default",
) -> ScoredRun:
    """Draw a scored run: `n_items` items per task, the first half "train", the rest "test".

    Args:
        pops: one population (model "model-0"), or model name -> population; every model
            answers the same items (their responses are drawn independently).
        n_items: items per task (>= 2).
        seed: the seed; same seed, same run.
        prompt: the prompt name.

    Returns:
        A `ScoredRun` for `metrics.analyze`.
    """
    if isinstance(pops, Population):
        pops = {"model-0": pops}
    if n_items < 2:
        raise UserError(f"sample: n_items={n_items} is too small", "use 2 or more items per task")
    rng = np.random.default_rng(seed)
    responses, sentences = [], []
    for model, pop in pops.items():
        r, s = _sample_one(pop, n_items, rng, model, prompt)
        responses.append(r)
        sentences.append(s)
    resp = pl.concat(responses).with_columns(pl.lit(0, dtype=pl.Int32).alias("_source"))
    sent = pl.concat(sentences).with_columns(pl.lit(0, dtype=pl.Int32).alias("_source"))
    return validate(ScoredRun(resp, sent, ("<simulated>",)))


def _sample_one(pop: Population, n_items: int, rng, model: str, prompt: str):
    T, M = pop.mic.shape
    n_resp = T * n_items
    task = np.repeat(np.arange(T), n_items)
    item = np.tile(np.arange(n_items), T)
    split = np.where(item < n_items // 2, "train", "test")
    n_sent = rng.choice(np.arange(1, len(pop.sentences) + 1), size=n_resp, p=pop.sentences)
    correct = rng.random(n_resp) < pop.accuracy[task]
    # Sentences.
    s_resp = np.repeat(np.arange(n_resp), n_sent)
    s_idx = np.arange(len(s_resp)) - np.repeat(np.cumsum(n_sent) - n_sent, n_sent)
    n_s = len(s_resp)
    t = task[s_resp]
    hedged = rng.random(n_s) < pop.hedge_rate
    m1 = np.where(hedged, rng.choice(M, size=n_s, p=pop.marker_freq), M)
    two = hedged & (rng.random(n_s) < pop.multi_marker)
    m2 = np.full(n_s, -1)
    todo = np.flatnonzero(two)
    while len(todo):  # j ~ freq given j != i: redraw the collisions
        draw = rng.choice(M, size=len(todo), p=pop.marker_freq)
        ok = draw != m1[todo]
        m2[todo[ok]] = draw[ok]
        todo = todo[~ok]
    levels = np.concatenate([pop.mic, pop.no_hedge_level[:, None]], axis=1)  # [T, M+1]
    level = np.where(two, (levels[t, m1] + levels[t, np.maximum(m2, 0)]) / 2, levels[t, m1])
    kappa = pop.concentration
    conf = rng.beta(level * kappa, (1 - level) * kappa)
    missing = rng.random(n_s) < pop.missing
    conf[missing] = np.nan
    # Decisiveness: each valid sentence at distance (1 - F_r) n_r / k_r from its confidence.
    k = np.bincount(s_resp, weights=~missing, minlength=n_resp)
    f_r = pop.faithfulness[task] + pop.faithfulness_spread * rng.uniform(-1, 1, size=n_resp)
    with np.errstate(invalid="ignore", divide="ignore"):
        gap = ((1 - f_r) * n_sent / k)[s_resp]
    dec = np.where(conf + gap <= 1, conf + gap, conf - gap)
    dec[missing] = np.nan
    # Tables: one row per (sentence, marker).
    rows = np.concatenate([np.arange(n_s), np.flatnonzero(two)])
    marker = np.concatenate([m1, m2[two]])
    names = np.array(pop.marker_names, dtype=object)
    tasks = np.array(pop.tasks, dtype=object)
    item_names = np.array([f"q{i:06d}" for i in range(n_items)], dtype=object)
    r = s_resp[rows]
    responses = pl.DataFrame(
        {
            "model": np.full(n_resp, model, dtype=object),
            "task": tasks[task],
            "split": split,
            "prompt": np.full(n_resp, prompt, dtype=object),
            "item_id": item_names[item],
            "correct": correct,
            "n_sentences": n_sent.astype(np.int32),
        }
    )
    sentences = pl.DataFrame(
        {
            "model": np.full(len(rows), model, dtype=object),
            "task": tasks[task[r]],
            "split": split[r],
            "prompt": np.full(len(rows), prompt, dtype=object),
            "item_id": item_names[item[r]],
            "sentence_idx": s_idx[rows].astype(np.int32),
            "marker": names[marker],
            "confidence": conf[rows],
            "decisiveness": dec[rows],
        }
    ).with_columns(pl.col("confidence", "decisiveness").fill_nan(None))
    return responses, sentences


# ---------------------------------------------------------------------------------- studies


def standard_populations() -> dict[str, Population]:
    """The populations of benchmarks/interval_coverage.py and the coverage tests.

    * ``example``: `Population.example()`: 4 tasks x 10 markers, Zipf(0.8) frequencies, task
      shifts of sd 0.08. I-AvgMAE Mode 4 is 0 (the two halves of a task share a population).
    * ``stable``: every marker (and `<no_hedge>`) means the same in every task: C-AvgMAE Mode 4
      and C-AvgCV are 0 as well, MRC is 1, MAC and MCC are undefined.
    * ``near-constant``: 5 tasks x 14 markers, a longer tail (Zipf 1.1), noisier confidences
      (kappa 8), more two-marker sentences, and a frequent marker whose level is nearly the same
      in every task (a near-0 term in C-AvgCV and C-AvgMAE Mode 4).
    * ``separated``: `separated_population`: no two markers of a task closer than 0.045, so the
      rank correlations' population value is an order the samples can resolve.
    """
    near = Population.example(
        n_tasks=5, n_markers=14, seed=3, zipf=1.1, concentration=8.0, multi_marker=0.3
    )
    mic = near.mic.copy()
    mic[:, 1] = 0.62 + 0.004 * np.arange(mic.shape[0])
    return {
        "example": Population.example(),
        "stable": Population.example(seed=1, task_shift=0.0, no_hedge_level=0.72),
        "near-constant": Population(**{**near.__dict__, "mic": mic}),
        "separated": separated_population(),
    }


def separated_population(seed: int = 0, n_tasks: int = 4, n_markers: int = 10) -> Population:
    """A population whose markers' orders within every task are resolvable (no near-ties).

    Marker levels are evenly spaced over [0.25, 0.85] (0.067 apart); in each task two disjoint
    pairs of neighbours swap places and every level moves by at most 0.01, so any two markers of
    a task are at least 0.045 apart (2-3 standard errors of a MIC at 300 items per task) while
    the task pairs' rank correlations are below 1. `<no_hedge>` sits above every marker. The
    populations of `Population.example` put some markers of a task within 0.001 of each other:
    the rank correlations' population value then depends on an order no realistic sample can
    resolve (docs/statistics.md). Across tasks a marker moves little (MAC and MCC have near-ties
    on that axis).
    """
    rng = np.random.default_rng(seed)
    level = np.linspace(0.25, 0.85, n_markers)
    mic = np.empty((n_tasks, n_markers))
    for t in range(n_tasks):
        v = level.copy()
        for i in rng.choice(np.arange(0, n_markers - 1, 2), size=2, replace=False):
            v[i], v[i + 1] = v[i + 1], v[i]
        mic[t] = v + rng.uniform(-0.01, 0.01, n_markers)
    no_hedge = 0.91 + 0.04 * rng.random(n_tasks)
    return Population.example(n_tasks, n_markers, seed=seed, mic=mic, no_hedge_level=no_hedge)


def valid_mask(pop: Population, mic_table: pl.DataFrame, model: str = "model-0") -> np.ndarray:
    """[T, M+1] the analysis' valid markers per task (from `AnalysisResult.mic_table`), in the
    population's task and marker order: the marker set the population values must use."""
    names = pop.marker_names
    col = {m: i for i, m in enumerate(names)}
    row = {t: i for i, t in enumerate(pop.tasks)}
    out = np.zeros((len(pop.tasks), len(names)), dtype=bool)
    part = mic_table.filter(pl.col("model") == model, pl.col("valid"), pl.col("mic").is_not_null())
    for task, marker in part.select("task", "marker").iter_rows():
        out[row[task], col[marker]] = True
    return out


def coverage_study(
    pop: Population,
    n_items: int,
    reps: int,
    *,
    n_boot: int = 400,
    seed: int = 0,
    threshold: int = 10,
    level: float = 0.95,
    rank_resolution: float = RANK_RESOLUTION,
) -> pl.DataFrame:
    """Draw `reps` runs from `pop`, analyze each with the bootstrap, compare with the truth.

    Args:
        pop: the population.
        n_items: items per task of each run (half reference, half evaluation).
        reps: number of simulated runs R.
        n_boot: bootstrap replicates B per run.
        seed: seed of the study (run r uses seed + r for the data and the bootstrap).
        threshold: the analysis' marker count threshold.
        level: confidence level.
        rank_resolution: h of the analysis and of the truth of the Spearman variants.

    Returns:
        One row per (run, metric): truth, value, debiased, se, ci_lo, ci_hi, covered, and
        `truth_exact`, `covered_exact` against the ordinary (h = 0) population value.
    """
    from metrics.analyze import analyze  # metrics.analyze imports this module's siblings

    rows: list[dict] = []
    cache: dict[bytes, tuple[dict, dict]] = {}
    for r in range(reps):
        res = analyze(
            sample(pop, n_items, seed + r), bootstrap=n_boot, seed=seed + r, threshold=threshold,
            level=level, rank_resolution=rank_resolution,
        )  # fmt: skip
        valid = valid_mask(pop, res.mic_table)
        key = valid.tobytes()
        if key not in cache:
            cache[key] = (
                population_values(pop, valid, rank_resolution),
                population_values(pop, valid, 0.0),
            )
        truth, exact = cache[key]
        for name, e in res.metrics_json["models"]["model-0"]["default"]["metrics"].items():
            if truth.get(name) is None or e.get("ci") is None:
                continue
            lo, hi = e["ci"]
            t0 = exact.get(name)
            rows.append(
                {
                    "run": r, "metric": name, "truth": truth[name], "value": e["value"],
                    "debiased": e["debiased"], "se": e["se"], "ci_lo": lo, "ci_hi": hi,
                    "covered": lo <= truth[name] <= hi, "truth_exact": t0,
                    "covered_exact": None if t0 is None else lo <= t0 <= hi,
                }
            )  # fmt: skip
    return pl.DataFrame(rows)


def comparison_study(
    pop_a: Population,
    pop_b: Population,
    n_items: int,
    reps: int,
    *,
    n_boot: int = 400,
    seed: int = 0,
    threshold: int = 10,
    level: float = 0.95,
) -> pl.DataFrame:
    """Draw `reps` runs of two models (from `pop_a` and `pop_b`) answering the same items and
    compare them (`analyze(..., compare=True)`).

    With pop_a == pop_b every paired test's null hypothesis holds: its rejection rate at alpha
    should be alpha. With a planted difference, the rejection rate is the test's power.

    Returns:
        One row per (run, metric) of the paired bootstrap tests: p_value, p_holm,
        diff_debiased, ci_lo, ci_hi, same_markers, on_common_markers, and the population
        difference `truth_diff`.
    """
    from metrics.analyze import analyze

    truth_a, truth_b = population_values(pop_a), population_values(pop_b)
    frames = []
    for r in range(reps):
        res = analyze(
            sample({"model-a": pop_a, "model-b": pop_b}, n_items, seed + r),
            bootstrap=n_boot, seed=seed + r, threshold=threshold, level=level, compare=True,
        )  # fmt: skip
        table = res.comparisons.filter(pl.col("test") == "paired bootstrap")
        truth = [
            None if truth_a.get(m) is None or truth_b.get(m) is None else truth_a[m] - truth_b[m]
            for m in table.get_column("metric").to_list()
        ]
        frames.append(
            table.select(
                "metric",
                "p_value",
                "p_holm",
                "diff_debiased",
                "ci_lo",
                "ci_hi",
                "same_markers",
                "on_common_markers",
            ).with_columns(pl.lit(r).alias("run"), pl.Series("truth_diff", truth, pl.Float64))
        )
    return pl.concat(frames)
