"""`mic power`: from a pilot run to a plan (standard errors, items for a width, detectable differences).

How many items per task does a study need, and how large a difference between two models or
prompts can it detect? Everything comes from the pilot's own bootstrap replicates (the same
item-keyed replicates `mic analyze` uses, so two groups on the same items are paired):

* **Standard error as a function of items per task.** The pilot is resized by a seeded hash of
  the item: subsampled to a quarter and a half (nested), and repeated to the planned size (copy c
  of an item gets id ``<id>#<split>#c``, so a Poisson(1) bootstrap draws each original item Poisson(k)
  times: the bootstrap of a k-times larger study from the pilot's empirical distribution, the
  m-out-of-n bootstrap with m > n; markers reach the count threshold as they would at that
  size). The SE at each size gives a log-log curve; its slope between the pilot and the planned
  size is the `exponent` (1/sqrt(n) would be -0.5), and the slope over the subsamples is
  `exponent_subsample`, the check. In the held-out protocol each copy is dealt to the reference
  or evaluation half at random (`resize(pool=...)`). Measured on the simulator
  (benchmarks/planning.py, 200-item pilots, 1,000 items planned): every headline metric and MAE
  mode within 11 % of the measured SE (the MAE modes and CVs within 3 %), while extrapolating
  the subsample slope alone missed MRC and the CVs by factors of 2-4 (their SE does not follow
  one power law over 50-200 items).
* **Items for a width.** The basic intervals of `metrics.json` are about ``2 z SE`` wide, so a
  target width W needs the n where ``SE(n) = W / (2 z)``.
* **Minimum detectable difference (paired).** For two groups on the same items the replicate
  differences give SE_diff directly (their correlation rho is reported: a positive rho is what a
  paired design gains); ``MDD(n) = (z_{1 - alpha/2} + z_power) SE_diff(n)``, with SE_diff's own
  exponent. For MAC, whose paired test takes the sd of its debiased difference from a second
  bootstrap level, SE_diff is that sd (`metrics.debias.second_level_se`), as the test will use.
  A single group is planned as one of two independent groups like it (rho = 0).
* **K against N** (`metrics.planning_kn`): the variance of a sentence's confidence split into a
  between-sentence and a within-sentence (across consistency samples) part, and the (K, N) that
  minimises the width for a budget.

    from metrics.power import power_plan
    plan = power_plan(["runs/pilot/scored"], width=0.02, items=1000, bootstrap=400)
    plan.table.filter(pl.col("name") == "I-AvgMAE")

See docs/statistics.md ("Planning") for the method and its measured accuracy
(benchmarks/planning.py).
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
from scipy import stats

from engine.contract import atomic_write
from engine.errors import UserError
from metrics.analyze import check_rank_resolution, group_metrics, group_views
from metrics.bootstrap._validate import check_level, check_n_boot
from metrics.core import compute_tables
from metrics.debias import second_level_se
from metrics.encode import encode
from metrics.io import ScoredRun, read_scored
from metrics.resample import group_replicates, local_group_sums, response_keys
from metrics.seven import RANK_RESOLUTION, Metric

# The headline seven and the MAE modes (variants with "-sig" / Pearson are left out: a plan is
# made for the numbers a paper reports first).
PLAN_METRICS = (
    "I-AvgMAE",
    "C-AvgMAE",
    "MRC",
    "MAC",
    "MCC",
    "I-AvgCV",
    "C-AvgCV",
    "I-AvgMAE (Mode 2)",
    "I-AvgMAE (Mode 3)",
    "I-AvgMAE (Mode 4)",
    "C-AvgMAE (Mode 2)",
    "C-AvgMAE (Mode 3)",
    "C-AvgMAE (Mode 4)",
)
MIN_ITEMS = 40  # per task and group: the quarter subsamples need about 10 items each
RECOMMENDED_ITEMS = 200
MIN_BOOTSTRAP = 100
MAX_ITEMS = 10**9
LARGE_RATIO = 4.0  # computed too when the planned size is near the pilot's: the curve's tail
TAIL_SPAN = 4.5  # the sizes within this factor of the largest fit the tail's slope
SUBSAMPLE_RATIOS = (0.25, 0.5)  # the scaling check below the pilot's size
DEFAULT_SCALE_UP = 5.0  # planned size without --items: 5 x the pilot
ASSUMED_EXPONENT = -0.5
EXPONENT_RANGE = (-1.5, 0.0)
_SPLIT_SALT = 0x9E3779B97F4A7C15


@dataclass(frozen=True)
class PowerResult:
    """A plan: one row per (group or pair of groups, quantity), the JSON document, the output dir.

    `table` columns: model, prompt, model_b, prompt_b (null for one group), kind ("metric" or
    "mic"), name (metric or marker), task (MICs), n_pilot (items per task), se_pilot, exponent,
    exponent_source ("fit" or "assumed"), se_planned (at `items`), items_for_width, rho (paired
    replicate correlation; null for one group), se_diff_pilot, mdd_pilot, mdd_planned.
    """

    table: pl.DataFrame
    plan: dict
    out_dir: Path | None


@dataclass
class _Fit:
    """SEs of one quantity at each subsample size, and the fitted exponent."""

    n: list[float] = field(default_factory=list)
    se: list[float] = field(default_factory=list)


# ------------------------------------------------------------------------------- resizing


def _mix(keys: np.ndarray, seed: int) -> np.ndarray:
    """A uniform number in [0, 1) per item key (splitmix64 of key ^ seed)."""
    with np.errstate(over="ignore"):
        z = keys.astype(np.uint64) ^ np.uint64((seed * _SPLIT_SALT) & 0xFFFFFFFFFFFFFFFF)
        z = z + np.uint64(_SPLIT_SALT)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def copies(run: ScoredRun, ratio: float, seed: int) -> np.ndarray:
    """Copies of each response in a run `ratio` times the pilot's size: floor(ratio), plus one
    more for a share frac(ratio) of the items, chosen by a seeded hash of the item (task,
    split/item_id). Every group gets the same count for the same item (resized runs stay
    paired), and smaller ratios keep subsets of larger ones (nested subsamples)."""
    keys, _ = response_keys(run.responses)
    whole = math.floor(ratio)
    return whole + (_mix(keys, seed) < ratio - whole).astype(np.int64)


def resize(
    run: ScoredRun, ratio: float, seed: int, pool: tuple[str, str] | None = None
) -> ScoredRun:
    """The pilot at `ratio` times its items per task.

    Below 1, a seeded subsample of the items. Above 1, every item repeated (copy c gets item id
    ``<id>#<split>#c``, so the bootstrap draws each copy independently): a Poisson(1) bootstrap
    of the repeated run draws each original item Poisson(ratio) times, which is the bootstrap of
    a run `ratio` times as large from the pilot's empirical distribution (the m-out-of-n
    bootstrap with m > n). Marker counts grow with it, so markers that reach the count
    threshold at the planned size count there, as they would in the real study.

    Args:
        run: the pilot.
        ratio: the size wanted over the pilot's.
        seed: seed of the item hash.
        pool: (reference split, evaluation split) of the held-out protocol: above 1, each copy
            is dealt to one of them at random, in the task's proportions. The held-out
            protocol splits one population in two; in the pilot's empirical distribution the
            two halves differ by the pilot's noise, which an in-task MAE would read as a real
            shift and whose noise it would then carry at every size (measured: SEs of
            I-AvgMAE 12-15 % too large at 5x the pilot without pooling).
    """
    k = copies(run, ratio, seed)
    r_of = run.sentences.get_column("_r").to_numpy()
    resp, sent = [], []
    offset = 0
    for c in range(int(k.max()) if len(k) else 0):
        keep = k > c
        new_index = np.cumsum(keep) - 1
        rows = keep[r_of]
        r = run.responses.filter(pl.Series(keep))
        if ratio > 1:
            r = r.with_columns(
                pl.concat_str(
                    [pl.col("item_id"), pl.col("split"), pl.lit(str(c))], separator="#"
                ).alias("item_id")
            )
        resp.append(r)
        sent.append(
            run.sentences.filter(pl.Series(rows)).with_columns(
                pl.Series("_r", (new_index[r_of[rows]] + offset).astype(r_of.dtype))
            )
        )
        offset += r.height
    responses = pl.concat(resp)
    if pool is not None and ratio > 1:
        responses = _pool_splits(responses, pool, seed)
    return ScoredRun(responses, pl.concat(sent), run.files)


def _pool_splits(responses: pl.DataFrame, pool: tuple[str, str], seed: int) -> pl.DataFrame:
    """Deal each item of a task with both splits to one of them, in the task's proportions
    (by a seeded hash of the task and item id: every group gets the same split)."""
    ref, ev = pool
    items = responses.select("task", "split", "item_id").unique()
    share = (
        items.group_by("task")
        .agg(
            (pl.col("split") == ref).sum().alias("_n_ref"),
            (pl.col("split") == ev).sum().alias("_n_ev"),
        )
        .filter((pl.col("_n_ref") > 0) & (pl.col("_n_ev") > 0))
        .with_columns((pl.col("_n_ref") / (pl.col("_n_ref") + pl.col("_n_ev"))).alias("_share"))
        .select("task", "_share")
    )
    keys, _ = response_keys(responses.with_columns(pl.lit("").alias("split")))
    u = _mix(keys, seed + 1)
    return (
        responses.with_columns(pl.Series("_u", u))
        .join(share, on="task", how="left", maintain_order="left")
        .with_columns(
            pl.when(pl.col("_share").is_not_null() & pl.col("split").is_in([ref, ev]))
            .then(pl.when(pl.col("_u") < pl.col("_share")).then(pl.lit(ref)).otherwise(pl.lit(ev)))
            .otherwise(pl.col("split"))
            .alias("split")
        )
        .drop("_u", "_share")
    )


# ---------------------------------------------------------------------------- replicates


@dataclass(frozen=True)
class _Replicates:
    """Bootstrap replicates of one (sub)sample, by group: metrics, MICs and items per task."""

    groups: list[tuple[str, str]]
    tasks: list[str]
    markers: list[str]
    metrics: dict[int, dict[str, Metric]]
    mic: dict[int, np.ndarray]  # g -> [B, T, M]
    shared: dict[int, np.ndarray]  # g -> [M]
    items: dict[int, np.ndarray]  # g -> [T] responses per task (all splits)


def replicates(
    run: ScoredRun,
    *,
    bootstrap: int,
    seed: int,
    threshold: int = 10,
    mode: str = "heldout",
    level: float = 0.95,
    rank_resolution: float = RANK_RESOLUTION,
) -> _Replicates:
    """Every group's metric and MIC replicates, exactly as `metrics.analyze` computes them."""
    parity = mode == "parity"
    enc = encode(run, mode=mode, seed=seed, threshold=threshold)
    tables, valid = compute_tables(enc, threshold=threshold, parity=parity)
    views = group_views(enc, tables, valid)
    keys, strata = response_keys(run.responses)
    metrics, mic, shared, items = {}, {}, {}, {}
    # A pair's MAC is tested with the sd of its debiased difference from a second bootstrap level
    # (`metrics.debias.second_level_se`), so its plan takes the same SE.
    pairs = len(views) > 1
    for view in views:
        g = view.g
        reps = group_replicates(
            enc, g, keys, strata, seed=seed, n_boot=bootstrap, scheme="poisson", parity=parity,
            valid=valid, point=tables, group_sums=local_group_sums,
        )  # fmt: skip
        metrics[g] = group_metrics(
            view, tables, parity, reps, level, rank_resolution, second_level=pairs
        )
        mic[g] = reps.mic
        shared[g] = view.shared
        items[g] = np.bincount(enc.r_t[enc.r_g == g], minlength=enc.n_tasks)
    return _Replicates(enc.groups, enc.tasks, enc.markers, metrics, mic, shared, items)


def _base(metric: Metric) -> np.ndarray | None:
    """The replicates a metric's interval is built on (as `metrics.analyze.metric_entry`)."""
    if metric.values is None or len(metric.values) < 3 or not np.isfinite(metric.values[0]):
        return None
    return metric.corrected if metric.corrected is not None else metric.values


def _sd(x: np.ndarray) -> float:
    x = x[np.isfinite(x)]
    return float(np.std(x, ddof=1)) if len(x) >= 3 else float("nan")


def _quantities(rep: _Replicates) -> dict[tuple, tuple[float, float, float]]:
    """(group key, kind, name, task) -> (items per task, SE, rho) for every planned quantity.

    Group key is (g,) for one group and (ga, gb) for a pair; rho is NaN for one group.
    """
    out: dict[tuple, tuple[float, float, float]] = {}
    names = {m: i for i, m in enumerate(rep.markers)}
    for g, metrics in rep.metrics.items():
        tasks = np.flatnonzero(rep.items[g] > 0)
        n = float(np.mean(rep.items[g][tasks])) if len(tasks) else float("nan")
        for name in PLAN_METRICS:
            base = _base(metrics[name]) if name in metrics else None
            if base is not None:
                out[((g,), "metric", name, "")] = (n, _sd(base[1:]), float("nan"))
        for t in tasks:
            for m in np.flatnonzero(rep.shared[g]):
                out[((g,), "mic", rep.markers[m], rep.tasks[t])] = (
                    n, _sd(rep.mic[g][:, t, m]), float("nan"),
                )  # fmt: skip
    for ga, gb in itertools.combinations(sorted(rep.metrics), 2):
        ta = rep.items[ga] > 0
        n = float(np.mean(rep.items[ga][ta])) if ta.any() else float("nan")
        for name in PLAN_METRICS:
            a = _base(rep.metrics[ga][name]) if name in rep.metrics[ga] else None
            b = _base(rep.metrics[gb][name]) if name in rep.metrics[gb] else None
            if a is None or b is None:
                continue
            two_level = second_level_se(rep.metrics[ga][name], rep.metrics[gb][name])
            se = two_level if two_level is not None else _sd(a[1:] - b[1:])
            out[((ga, gb), "metric", name, "")] = (n, se, _corr(a[1:], b[1:]))
        both = rep.shared[ga] & rep.shared[gb]
        for t in np.flatnonzero(ta & (rep.items[gb] > 0)):
            for m in np.flatnonzero(both):
                a, b = rep.mic[ga][:, t, m], rep.mic[gb][:, t, m]
                out[((ga, gb), "mic", rep.markers[m], rep.tasks[t])] = (
                    n, _sd(a - b), _corr(a, b),
                )  # fmt: skip
    del names
    return out


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3 or np.std(a[ok]) == 0 or np.std(b[ok]) == 0:
        return float("nan")
    return float(np.corrcoef(a[ok], b[ok])[0, 1])


def fit_exponent(n: np.ndarray, se: np.ndarray) -> float | None:
    """Least-squares slope of log SE on log n (None with fewer than 2 usable sizes)."""
    n, se = np.asarray(n, dtype=np.float64), np.asarray(se, dtype=np.float64)
    ok = np.isfinite(n) & np.isfinite(se) & (se > 0) & (n > 0)
    if len(np.unique(n[ok])) < 2:
        return None
    x, y = np.log(n[ok]), np.log(se[ok])
    return float(np.polyfit(x, y, 1)[0])


def scaling(
    run: ScoredRun,
    ratios: tuple[float, ...],
    *,
    bootstrap: int,
    seed: int,
    threshold: int = 10,
    mode: str = "heldout",
    rank_resolution: float = RANK_RESOLUTION,
) -> tuple[dict[tuple, _Fit], dict[tuple, tuple[float, float, float]], list[tuple[str, str]]]:
    """SE of every planned quantity with the pilot resized to each ratio (1 = the pilot).

    Returns:
        (curves, full, groups): per quantity key its items per task and SE at each ratio (in the
        order given; a ratio where the quantity is undefined is left out), the pilot's own
        (items per task, SE, rho), and the group names by code.
    """
    curves: dict[tuple, _Fit] = {}
    full: dict[tuple, tuple[float, float, float]] = {}
    groups: list[tuple[str, str]] = []
    for ratio in ratios:
        pool = ("train", "test") if mode == "heldout" else None
        sub = run if ratio == 1 else resize(run, ratio, seed, pool)
        rep = replicates(
            sub, bootstrap=bootstrap, seed=seed, threshold=threshold, mode=mode,
            rank_resolution=rank_resolution,
        )  # fmt: skip
        for key, (n, se, rho) in _quantities(rep).items():
            if ratio == 1:
                full[key] = (n, se, rho)
                groups = rep.groups
            if np.isfinite(se):
                curve = curves.setdefault(key, _Fit())
                curve.n.append(n)
                curve.se.append(se)
    return curves, full, groups


def se_at(curve: _Fit, n: float) -> tuple[float, float]:
    """SE at n items per task on the log-log curve through the computed sizes, and the slope
    used there (linear in log n between computed sizes; beyond them, the nearest segment's)."""
    order = np.argsort(curve.n)
    x = np.log(np.asarray(curve.n)[order])
    y = np.log(np.maximum(np.asarray(curve.se)[order], 1e-300))
    if len(x) == 1:
        return float(np.exp(y[0] + ASSUMED_EXPONENT * (np.log(n) - x[0]))), ASSUMED_EXPONENT
    i = int(np.clip(np.searchsorted(x, np.log(n)) - 1, 0, len(x) - 2))
    slope = (y[i + 1] - y[i]) / (x[i + 1] - x[i]) if x[i + 1] > x[i] else ASSUMED_EXPONENT
    return float(np.exp(y[i] + slope * (np.log(n) - x[i]))), float(slope)


def n_for_se(curve: _Fit, target: float) -> int | None:
    """Items per task where the curve reaches SE `target` (None: it flattens out before)."""
    order = np.argsort(curve.n)
    n = np.asarray(curve.n)[order]
    se = np.asarray(curve.se)[order]
    if target >= se[0]:
        return int(math.ceil(n[0]))
    for i in range(len(n) - 1):
        if se[i + 1] <= target < se[i]:
            b = math.log(se[i + 1] / se[i]) / math.log(n[i + 1] / n[i])
            return int(math.ceil(n[i] * (target / se[i]) ** (1.0 / b)))
    # Beyond the largest computed size: the least-squares slope over the sizes from the pilot up
    # (one bootstrap-noisy segment alone can point anywhere).
    top = n >= n[-1] / TAIL_SPAN
    b = fit_exponent(n[top], se[top])
    if b is None or b >= 0:
        return None
    wanted = n[-1] * (target / se[-1]) ** (1.0 / b)
    # A flat tail can ask for astronomically many items: out of reach, say none.
    return int(math.ceil(wanted)) if wanted <= MAX_ITEMS else None


# ------------------------------------------------------------------------------------ plan


def _check(run: ScoredRun, bootstrap: int) -> None:
    counts = run.responses.group_by("model", "prompt", "task").len().sort("len", "model", "prompt")
    low = counts.row(0, named=True)
    if low["len"] < MIN_ITEMS:
        where = ", ".join(run.files[:2]) or "the pilot"
        raise UserError(
            f"{where}: task {low['task']!r} of {low['model']}/{low['prompt']} has {low['len']} "
            f"items; a power plan needs at least {MIN_ITEMS} items per task "
            f"({RECOMMENDED_ITEMS} recommended)",
            f"run a pilot with {RECOMMENDED_ITEMS} items per task (tasks.limit) and plan from it",
        )
    if bootstrap < MIN_BOOTSTRAP:
        raise UserError(
            f"--bootstrap {bootstrap} is too few to estimate standard errors",
            f"use --bootstrap {MIN_BOOTSTRAP} or more (400 is a good pilot default)",
        )


def power_plan(
    scored,
    *,
    out: str | Path | None = None,
    width: float | None = None,
    alpha: float = 0.05,
    power: float = 0.8,
    items: int | None = None,
    bootstrap: int = 400,
    seed: int = 0,
    level: float = 0.95,
    threshold: int = 10,
    mode: str = "heldout",
    budget_tokens: float | None = None,
    budget_gpu_hours: float | None = None,
    kn_metric: str = "I-AvgMAE",
    rank_resolution: float = RANK_RESOLUTION,
) -> PowerResult:
    """Plan a study from a pilot: SE(n), items for a width, minimum detectable differences, K vs N.

    Args:
        scored: pilot scored-run directories or files (a study directory or its `scored/`
            subdirectory also gives the per-judgment table and throughput for K vs N), or a
            `ScoredRun` in memory.
        out: output directory for power.json and power.parquet (None: write nothing).
        width: target interval width (None: skip items_for_width).
        alpha: two-sided significance level of the paired test.
        power: the power at which a difference counts as detectable.
        items: planned items per task (default: 5 x the pilot's).
        bootstrap: bootstrap replicates at each size (>= 100).
        seed: seed of the bootstrap and of the resized pilots.
        level: confidence level of the intervals a width refers to.
        threshold: marker count threshold tau (as `mic analyze`).
        mode: "heldout" or "parity" (as `mic analyze`).
        budget_tokens: a budget in generated tokens for the K vs N recommendation.
        budget_gpu_hours: a budget in GPU-hours (converted with the pilot's throughput).
        kn_metric: the metric whose width K vs N minimises.
        rank_resolution: h of the MRC/MAC/MCC Spearman intervals (as `mic analyze`).

    Returns:
        The `PowerResult`.
    """
    from metrics.planning_kn import kn_plan, locate_pilot

    n_boot = check_n_boot(bootstrap)
    level = check_level(level)
    rank_resolution = check_rank_resolution(rank_resolution)
    for flag, value in (("--alpha", alpha), ("--power", power)):
        if not 0 < value < 1:
            raise UserError(f"{flag} {value} must lie strictly between 0 and 1", "e.g. 0.05, 0.8")
    if width is not None and not width > 0:
        raise UserError(f"--width {width} must be positive", "e.g. --width 0.02")
    if items is not None and items < 2:
        raise UserError(f"--items {items} must be 2 or more", "e.g. --items 1000")
    if budget_tokens is not None and budget_gpu_hours is not None:
        raise UserError(
            "--budget-tokens and --budget-gpu-hours both given", "give one budget, not both"
        )
    if isinstance(scored, ScoredRun):
        run, pilot = scored, None
    else:
        paths = [scored] if isinstance(scored, str | Path) else list(scored)
        pilot = locate_pilot(paths)
        run = read_scored(pilot.scored)
    _check(run, n_boot)

    n_pilot = float(run.responses.group_by("model", "prompt", "task").len()["len"].median())
    planned = float(items) if items is not None else DEFAULT_SCALE_UP * n_pilot
    ratios = (*SUBSAMPLE_RATIOS, 1.0, planned / n_pilot)
    if planned / n_pilot < LARGE_RATIO - 1:
        ratios += (LARGE_RATIO,)
    curves, full, groups = scaling(
        run, tuple(dict.fromkeys(ratios)), bootstrap=n_boot, seed=seed, threshold=threshold,
        mode=mode, rank_resolution=rank_resolution,
    )  # fmt: skip

    z_level = stats.norm.ppf(0.5 + level / 2)
    z_mdd = stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)
    target = None if width is None else width / (2 * z_level)
    rows = []
    for key, (n0, se0, rho) in full.items():
        gkey, kind, name, task = key
        if not (np.isfinite(se0) and se0 > 0):
            continue
        curve = curves[key]
        small = [i for i, n in enumerate(curve.n) if n <= n0]
        check = fit_exponent(np.array(curve.n)[small], np.array(curve.se)[small])
        n_plan = n0 * planned / n_pilot
        se_plan, _ = se_at(curve, n_plan)
        slope = math.log(se_plan / se0) / math.log(n_plan / n0) if n_plan != n0 else None
        pair = len(gkey) == 2
        ga = groups[gkey[0]]
        gb = groups[gkey[1]] if pair else (None, None)
        # One group: planned as one of two independent groups like it (SE_diff = sqrt 2 SE).
        factor = 1.0 if pair else math.sqrt(2.0)
        needed = None if target is None else n_for_se(curve, target)
        rows.append(
            {
                "model": ga[0], "prompt": ga[1], "model_b": gb[0], "prompt_b": gb[1],
                "kind": kind, "name": name, "task": task or None, "n_pilot": n0,
                "se_pilot": None if pair else se0, "exponent": slope,
                "exponent_subsample": check, "items_planned": n_plan,
                "se_planned": None if pair else se_plan,
                "items_for_width": None if pair else needed,
                "rho": rho if pair and np.isfinite(rho) else None,
                "se_diff_pilot": factor * se0, "se_diff_planned": factor * se_plan,
                "mdd_pilot": z_mdd * factor * se0, "mdd_planned": z_mdd * factor * se_plan,
            }
        )  # fmt: skip
    table = pl.DataFrame(rows, schema=_SCHEMA) if rows else pl.DataFrame(schema=_SCHEMA)
    if table.filter(pl.col("kind") == "metric").is_empty():
        raise UserError(
            f"{', '.join(run.files[:2]) or 'the pilot'}: no metric has a standard error "
            "(too few items or markers over the count threshold)",
            f"run a pilot with {RECOMMENDED_ITEMS} items per task (or lower --threshold)",
        )
    settings = {
        "width": width, "alpha": alpha, "power": power, "items": items, "bootstrap": n_boot,
        "seed": seed, "level": level, "threshold": threshold, "mode": mode,
        "rank_resolution": rank_resolution, "items_planned": planned,
        "sizes": "the pilot resized by a seeded hash of the item: subsampled to "
        + ", ".join(f"{r:g}" for r in SUBSAMPLE_RATIOS)
        + " (exponent_subsample), repeated to the planned size (m-out-of-n bootstrap)",
        "z_level": float(z_level), "z_alpha_plus_z_power": float(z_mdd),
    }  # fmt: skip
    kn = kn_plan(
        pilot, run, table, budget_tokens=budget_tokens, budget_gpu_hours=budget_gpu_hours,
        metric=kn_metric, level=level,
    )  # fmt: skip
    plan = {
        "version": 1,
        "settings": settings,
        "inputs": list(run.files),
        "quantities": _json_rows(table),
        "k_vs_n": kn,
    }
    out_dir = None
    if out is not None:
        out_dir = Path(out)
        text = json.dumps(plan, indent=2, allow_nan=False)
        atomic_write(out_dir / "power.json", text)
        atomic_write(out_dir / "power.parquet", lambda p: table.write_parquet(p))
    return PowerResult(table, plan, out_dir)


_SCHEMA = {
    "model": pl.String, "prompt": pl.String, "model_b": pl.String, "prompt_b": pl.String,
    "kind": pl.String, "name": pl.String, "task": pl.String, "n_pilot": pl.Float64,
    "se_pilot": pl.Float64, "exponent": pl.Float64, "exponent_subsample": pl.Float64,
    "items_planned": pl.Float64, "se_planned": pl.Float64, "items_for_width": pl.Int64,
    "rho": pl.Float64, "se_diff_pilot": pl.Float64, "se_diff_planned": pl.Float64,
    "mdd_pilot": pl.Float64, "mdd_planned": pl.Float64,
}  # fmt: skip


def _json_rows(table: pl.DataFrame) -> list[dict]:
    out = []
    for row in table.iter_rows(named=True):
        out.append(
            {
                k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                for k, v in row.items()
            }
        )
    return out


def format_plan(result: PowerResult) -> str:
    """A short table: per group the headline metrics, per pair their detectable differences."""
    t = result.table.filter(pl.col("kind") == "metric")
    s = result.plan["settings"]
    at = format(s["items_planned"], ".0f")
    lines = []
    one = t.filter(pl.col("model_b").is_null())
    for (model, prompt), part in one.group_by("model", "prompt", maintain_order=True):
        head = f"{'metric':<18} {'n':>5} {'SE':>8} {'exp':>5} {'check':>5} {'SE@' + at:>8}"
        head += f" {'MDD':>7} {'MDD@' + at:>8}"
        if s["width"] is not None:
            head += f" {'n for ' + format(s['width'], 'g'):>10}"
        lines += [f"{model}/{prompt} (MDD: against an independent group like it)", head]
        for r in part.iter_rows(named=True):
            line = (
                f"{r['name']:<18} {r['n_pilot']:>5.0f} {r['se_pilot']:>8.4f} {_f(r['exponent'])} "
                f"{_f(r['exponent_subsample'])} {r['se_planned']:>8.4f} {r['mdd_pilot']:>7.4f} "
                f"{r['mdd_planned']:>8.4f}"
            )
            if s["width"] is not None:
                n = r["items_for_width"]
                line += f" {'-' if n is None else n:>10}"
            lines.append(line)
    pairs = t.filter(pl.col("model_b").is_not_null())
    for (ma, pa, mb, pb), part in pairs.group_by(
        "model", "prompt", "model_b", "prompt_b", maintain_order=True
    ):
        lines += [f"{ma}/{pa} vs {mb}/{pb} (paired; rho: correlation of the replicates)"]
        lines.append(f"{'metric':<18} {'n':>5} {'rho':>5} {'SE diff':>8} {'exp':>5} {'MDD':>7} "
                     f"{'MDD@' + at:>8}")  # fmt: skip
        for r in part.iter_rows(named=True):
            rho = "" if r["rho"] is None else f"{r['rho']:.2f}"
            lines.append(
                f"{r['name']:<18} {r['n_pilot']:>5.0f} {rho:>5} {r['se_diff_pilot']:>8.4f} "
                f"{_f(r['exponent'])} {r['mdd_pilot']:>7.4f} {r['mdd_planned']:>8.4f}"
            )
    mic = result.table.filter((pl.col("kind") == "mic") & pl.col("model_b").is_null())
    if mic.height:
        q = mic.select(
            pl.col("se_pilot").median().alias("se"), pl.col("se_planned").median().alias("sp"),
            pl.col("items_for_width").median().alias("nw"), pl.len().alias("k"),
        ).row(0, named=True)  # fmt: skip
        line = f"shared-marker MICs ({q['k']}): median SE {q['se']:.4f}, at {at}: {q['sp']:.4f}"
        if s["width"] is not None and q["nw"] is not None:
            line += f"; the median MIC reaches width {s['width']:g} at {q['nw']:.0f} items per task"
        lines.append(line)
    kn = result.plan.get("k_vs_n") or {}
    if kn.get("skipped"):
        lines.append(f"K vs N: skipped ({kn['skipped']})")
    elif kn:
        lines.append(_kn_line(kn))
    return "\n".join(lines)


def _f(x: float | None) -> str:
    return f"{'-':>5}" if x is None else f"{x:>5.2f}"


def _kn_line(kn: dict) -> str:
    comp = kn["components"]
    line = (
        f"K vs N: sentence confidence variance between {comp['between']:.4f}, within "
        f"{comp['within']:.4f} (pilot K = {comp['k_pilot']:g})"
    )
    best = kn.get("recommendation")
    if best:
        line += (
            f"; for {kn['budget']['tokens']:.3g} generated tokens: K = {best['k']}, "
            f"N = {best['items_per_task']} items per task ({kn['metric']} width "
            f"{best['width']:.4f})"
        )
    else:
        line += f"; {kn.get('note', 'give --budget-tokens or --budget-gpu-hours for a (K, N)')}"
    return line
