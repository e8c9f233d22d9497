"""`mic power` (metrics.power, metrics.planning_kn) on known-truth populations and real tables.

Small and seeded: the full checks (SE at 1,000 items within 15 %, power 0.80 +- 0.07 over 200
studies) are benchmarks/planning.py; these guard direction and rough level.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from engine.cli import main
from engine.errors import UserError
from metrics.debias import paired_difference
from metrics.io import read_scored
from metrics.planning_kn import variance_components
from metrics.power import (
    MIN_ITEMS,
    _quantities,
    copies,
    power_plan,
    replicates,
    resize,
)
from metrics.simulate import Population, population_values, sample

EXAMPLE = Path(__file__).resolve().parents[2] / "metrics" / "data" / "example"


@pytest.fixture(scope="module")
def pop() -> Population:
    return Population.example()


@pytest.fixture(scope="module")
def pilot_plan(pop):
    """A 200-item pilot of two models on the same items, planned at 1,000 items."""
    run = sample({"a": pop, "b": pop}, 200, 11)
    return power_plan(run, items=1000, bootstrap=200, seed=3, width=0.005)


def test_resize_repeats_and_subsamples_by_item(pop):
    run = sample({"a": pop, "b": pop}, 60, 1)
    big = resize(run, 2.5, seed=4)
    k = copies(run, 2.5, seed=4)
    assert set(np.unique(k)) == {2, 3}
    assert big.responses.height == int(k.sum())
    # Copies are new items (the bootstrap draws them independently), models stay paired.
    per_item = big.responses.group_by("model", "task", "split", "item_id").len()
    assert per_item.get_column("len").max() == 1
    ids = big.responses.group_by("task", "item_id").agg(pl.col("model").n_unique())
    assert ids.get_column("model").min() == 2
    # Sentences follow their response: each copy has its original's sentence rows.
    rows = np.bincount(run.sentences.get_column("_r").to_numpy(), minlength=run.responses.height)
    original = np.concatenate([np.flatnonzero(k > c) for c in range(int(k.max()))])
    big_rows = np.bincount(big.sentences.get_column("_r").to_numpy(), minlength=len(original))
    assert np.array_equal(big_rows, rows[original])
    # A repeated run has the pilot's plug-in values (a mean does not change when items repeat).
    a = replicates(run, bootstrap=3, seed=0, threshold=1)
    b = replicates(resize(run, 3.0, seed=0), bootstrap=3, seed=0, threshold=1)
    for name in ("I-AvgMAE", "C-AvgMAE", "MRC"):
        assert a.metrics[0][name].values[0] == pytest.approx(b.metrics[0][name].values[0])
    # Subsamples nest: the quarter's items are in the half.
    quarter = copies(run, 0.25, seed=9) > 0
    half = copies(run, 0.5, seed=9) > 0
    assert quarter.sum() < half.sum() and not (quarter & ~half).any()


def test_plan_direction_and_columns(pilot_plan):
    t = pilot_plan.table
    one = t.filter(pl.col("model_b").is_null(), kind="metric", model="a")
    assert set(one.get_column("name")) >= {"I-AvgMAE", "C-AvgMAE", "MRC", "I-AvgCV", "C-AvgCV"}
    mae = one.filter(name="I-AvgMAE").row(0, named=True)
    assert mae["n_pilot"] == 200 and mae["items_planned"] == pytest.approx(1000)
    # More items, smaller SE and MDD; the exponent of a mean-like metric is near -1/2.
    assert mae["se_planned"] < mae["se_pilot"]
    assert mae["mdd_planned"] < mae["mdd_pilot"]
    assert -0.9 < mae["exponent"] < -0.3
    assert -1.2 < mae["exponent_subsample"] < -0.2
    # Reaching width 0.005 takes more items than the pilot has, a looser width fewer.
    assert mae["items_for_width"] > 200
    # Pairs carry the replicate correlation and their own MDD.
    pair = t.filter(kind="metric", name="I-AvgMAE", model="a", model_b="b").row(0, named=True)
    assert -1 <= pair["rho"] <= 1
    assert pair["mdd_planned"] < pair["mdd_pilot"]
    # Shared-marker MICs are planned too, one row per (group, task, marker).
    mic = t.filter(pl.col("model_b").is_null(), kind="mic")
    assert mic.height > 0 and mic.get_column("task").null_count() == 0
    assert (mic.get_column("se_planned") < mic.get_column("se_pilot")).mean() > 0.8


def test_predicted_se_near_measured(pilot_plan, pop):
    """The SE predicted at 1,000 items from a 200-item pilot vs the bootstrap SE of four
    1,000-item studies (benchmarks/planning.py measures this with 20 pilots, 40 studies)."""
    measured = []
    for r in range(4):
        rep = replicates(sample(pop, 1000, 500 + r), bootstrap=200, seed=r)
        measured.append(_quantities(rep)[((0,), "metric", "I-AvgMAE", "")][1])
    predicted = pilot_plan.table.filter(
        pl.col("model_b").is_null(), kind="metric", name="I-AvgMAE", model="a"
    )
    ratio = predicted.get_column("se_planned")[0] / np.mean(measured)
    assert 0.7 < ratio < 1.4


def test_power_at_predicted_mdd_rough(pop):
    """At the pilot's size, a planted difference equal to the predicted MDD is found most of the
    time and no difference rarely (30 studies: a rough level; the benchmark runs 200)."""
    plan = power_plan(sample({"a": pop, "b": pop}, 200, 21), items=200, bootstrap=200, seed=1)
    mdd = plan.table.filter(kind="metric", name="I-AvgMAE", model_b="b").get_column("mdd_pilot")[0]
    truth = population_values(pop)["I-AvgMAE"]

    def kappa_for(diff: float) -> float:
        lo, hi = pop.concentration, pop.concentration * 20
        for _ in range(40):
            mid = (lo + hi) / 2
            b = Population(**{**pop.__dict__, "concentration": mid})
            lo, hi = (mid, hi) if truth - population_values(b)["I-AvgMAE"] < diff else (lo, mid)
        return (lo + hi) / 2

    pop_b = Population(**{**pop.__dict__, "concentration": kappa_for(mdd)})
    hits = {"planted": 0, "null": 0}
    for label, other in (("planted", pop_b), ("null", pop)):
        for r in range(30):
            rep = replicates(sample({"a": pop, "b": other}, 200, 700 + r), bootstrap=200, seed=r)
            d = paired_difference(rep.metrics[0]["I-AvgMAE"], rep.metrics[1]["I-AvgMAE"])
            hits[label] += int(d.p_value < 0.05)
    assert hits["planted"] / 30 >= 0.55
    assert hits["null"] / 30 <= 0.2
    assert hits["planted"] > hits["null"] + 8


def test_cli_on_bundled_example(tmp_path, capsys):
    out = tmp_path / "plan"
    code = main(["power", str(EXAMPLE), "--out", str(out), "--width", "0.02", "--items", "1600",
                 "--bootstrap", "150"])  # fmt: skip
    printed = capsys.readouterr().out
    assert code == 0
    assert "I-AvgMAE" in printed and "model-0/default vs model-1/default" in printed
    assert "K vs N: skipped (the pilot is a bare scored run" in printed
    doc = json.loads((out / "power.json").read_text())
    assert doc["settings"]["items_planned"] == 1600 and doc["settings"]["width"] == 0.02
    assert doc["k_vs_n"]["skipped"]
    table = pl.read_parquet(out / "power.parquet")
    assert table.height == len(doc["quantities"])
    assert (out / "power.json").stat().st_mode & 0o777 == 0o644


def test_too_small_pilot_says_how_many_items(pop, tmp_path, capsys):
    run = sample(pop, 20, 2)
    with pytest.raises(UserError, match=f"needs at least {MIN_ITEMS} items per task"):
        power_plan(run, bootstrap=100)
    # Through the CLI: one line, exit 2.
    code = main(["power", str(EXAMPLE), "--out", str(tmp_path / "x"), "--bootstrap", "10"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "--bootstrap 100 or more" in err


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--alpha", "1.5"], "--alpha 1.5 must lie strictly between 0 and 1"),
        (["--power", "0"], "--power 0.0 must lie strictly between 0 and 1"),
        (["--width", "-1"], "--width -1.0 must be positive"),
        (["--items", "1"], "--items 1 must be 2 or more"),
        (["--rank-resolution", "2"], "--rank-resolution 2.0 must be a number in [0, 1]"),
    ],
)
def test_bad_options_one_line(tmp_path, capsys, args, needle):
    code = main(["power", str(EXAMPLE), "--out", str(tmp_path / "x"), *args])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and needle in err


def _study_dir(tmp_path: Path, pop: Population, k: int) -> tuple[Path, float]:
    """A study directory: scored/ from the simulator, stages/confidence/judgments.parquet with K
    Bernoulli(confidence) judgments per sentence (the sentence's confidence set to their mean),
    and a summary.json. Returns the directory and the expected within-sentence variance."""
    run = sample(pop, 120, 5)
    rng = np.random.default_rng(0)
    resp = run.responses.drop("_source")
    sent = run.sentences.with_columns(
        resp.select("model", "task", "split", "prompt", "item_id")[
            run.sentences.get_column("_r").to_numpy()
        ]
    )
    first = sent.unique(subset=["model", "task", "split", "prompt", "item_id", "sentence_idx"],
                        keep="first", maintain_order=True)  # fmt: skip
    first = first.filter(pl.col("confidence").is_not_null())
    p = first.get_column("confidence").to_numpy()
    draws = (rng.random((len(p), k)) < p[:, None]).astype(np.float64)
    key = ["model", "task", "split", "prompt", "item_id", "sentence_idx"]
    judgments = pl.concat(
        [first.select(key).with_columns(pl.lit(j, pl.Int32).alias("sample_idx"),
                                        pl.Series("judgment", draws[:, j - 1])) for j in range(1, k + 1)]
    )  # fmt: skip
    means = first.select(key).with_columns(pl.Series("_mean", draws.mean(axis=1)))
    sent = (
        sent.join(means, on=key, how="left")
        .with_columns(
            pl.when(pl.col("confidence").is_not_null()).then(pl.col("_mean")).alias("confidence")
        )
        .drop("_mean", "_r", "_source")
    )
    d = tmp_path / "study"
    (d / "scored").mkdir(parents=True)
    (d / "stages" / "confidence").mkdir(parents=True)
    resp.write_parquet(d / "scored" / "responses.parquet")
    sent.write_parquet(d / "scored" / "sentences.parquet")
    judgments.write_parquet(d / "stages" / "confidence" / "judgments.parquet")
    rows = resp.height * (1 + k)
    (d / "summary.json").write_text(json.dumps({"models": {"m": {
        "rows": rows, "generated_tokens": rows * 30, "busy_seconds": rows * 30 / 500.0,
        "gpu_seconds": 0.0}}}))  # fmt: skip
    return d, float(np.mean(p * (1 - p)))


def test_k_vs_n_from_a_study_directory(pop, tmp_path):
    d, within = _study_dir(tmp_path, pop, k=8)
    comp = variance_components(pl.read_parquet(d / "stages/confidence/judgments.parquet"))
    assert comp["k_pilot"] == 8
    assert comp["within"] == pytest.approx(within, rel=0.1)
    assert comp["between"] > 0
    budget = 2_000_000
    plan = power_plan(d, bootstrap=100, budget_tokens=budget)
    kn = plan.plan["k_vs_n"]
    best = kn["recommendation"]
    assert kn["budget"]["tokens"] == budget
    # The grid spends the budget: (1 + K) x tokens per row x tasks x items fits in it.
    tasks = len(pop.tasks)
    for row in kn["grid"]:
        assert (1 + row["k"]) * 30 * tasks * row["items_per_task"] <= budget
    assert best["width"] == min(r["width"] for r in kn["grid"])
    # More judgments per sentence stop paying once within / K is small next to between.
    assert 1 <= best["k"] < 64
    # GPU-hours convert with the pilot's throughput (CPU busy seconds here, and it says so).
    by_hours = power_plan(d, bootstrap=100, budget_gpu_hours=1.0).plan["k_vs_n"]
    assert by_hours["budget"]["tokens"] == pytest.approx(3600 * 500.0)
    assert "no GPU" in by_hours["budget"]["clock"]
    # Its scored/ alone finds the judgments beside it; a copy elsewhere is a bare scored run.
    again = power_plan(d / "scored", bootstrap=100).plan["k_vs_n"]["components"]
    assert again == pytest.approx(comp)
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("responses", "sentences"):
        read_scored(d / "scored")  # readable as a scored run
        (bare / f"{name}.parquet").write_bytes((d / "scored" / f"{name}.parquet").read_bytes())
    skipped = power_plan(bare, bootstrap=100).plan["k_vs_n"]["skipped"]
    assert "bare scored run" in skipped


def test_k_vs_n_counts_tokens_in_shards_without_summary(pop, tmp_path):
    """A run generated in-process may have no summary.json: generated tokens per row come from
    the generation shards' token_ids, and a GPU-hour budget says it cannot be converted."""
    d, _ = _study_dir(tmp_path, pop, k=4)
    (d / "summary.json").unlink()
    (d / "shards").mkdir()
    pl.DataFrame({"token_ids": [[1] * 20, [2] * 40], "sample_idx": [0, 1]}).write_ipc(
        d / "shards" / "unit-a.arrow", compression="zstd"
    )
    kn = power_plan(d, bootstrap=100, budget_tokens=1e6).plan["k_vs_n"]
    assert kn["throughput"]["tokens_per_row"] == pytest.approx(30.0)
    assert kn["recommendation"]["items_per_task"] >= 2
    hours = power_plan(d, bootstrap=100, budget_gpu_hours=1.0).plan["k_vs_n"]
    assert "recommendation" not in hours and "--budget-tokens" in hours["note"]


def test_report_shows_the_plan_beside_the_analysis(tmp_path):
    """`mic power --out DIR` into an analysis directory: the report gains a Planning section
    (a figure of SE against items per task and the table)."""
    from metrics import analyze
    from metrics.report import build_report

    out = tmp_path / "results"
    analyze(EXAMPLE, out=out)
    page = build_report(out).read_text()
    assert "<h2>Planning</h2>" not in page
    power_plan(EXAMPLE, out=out, bootstrap=100, width=0.02, items=1600)
    page = build_report(out).read_text()
    section = page[page.index("<h2>Planning</h2>") :]
    assert "items per task" in section and "data:image/png;base64," in section
    assert "I-AvgMAE" in section and "n for width 0.02" in section


def test_pilot_se_is_the_se_mic_analyze_reports(pop):
    """The plan starts from the same replicates as `mic analyze` (same seed, same B)."""
    from metrics import analyze

    run = sample({"a": pop, "b": pop}, 120, 8)
    reported = analyze(run, bootstrap=100, seed=5).metrics_json["models"]["a"]["default"]
    mine = _quantities(replicates(run, bootstrap=100, seed=5))
    for name in ("I-AvgMAE", "C-AvgMAE", "MRC", "I-AvgCV", "C-AvgCV", "I-AvgMAE (Mode 4)"):
        assert mine[((0,), "metric", name, "")][1] == pytest.approx(
            reported["metrics"][name]["se"], rel=1e-9
        )


def test_plan_uses_the_rank_resolution_analyze_uses(pop, tmp_path):
    """`mic power` planned the rank metrics at h = 0.05 whatever the analysis used: the MRC
    standard error it starts from is now the one `mic analyze --rank-resolution H` reports."""
    from metrics import analyze

    run = sample({"a": pop, "b": pop}, 120, 8)
    se = {}
    for h in (0.0, 0.2):
        reported = analyze(run, bootstrap=100, seed=5, rank_resolution=h).metrics_json
        mine = _quantities(replicates(run, bootstrap=100, seed=5, rank_resolution=h))
        se[h] = mine[((0,), "metric", "MRC", "")][1]
        assert se[h] == pytest.approx(reported["models"]["a"]["default"]["metrics"]["MRC"]["se"])
    assert se[0.0] != pytest.approx(se[0.2], rel=1e-3)  # h reaches the replicates
    plan = power_plan(run, bootstrap=100, rank_resolution=0.2, out=tmp_path)
    assert json.loads((tmp_path / "power.json").read_text())["settings"]["rank_resolution"] == 0.2
    assert plan.plan["settings"]["rank_resolution"] == 0.2


def test_pair_mac_se_is_the_sd_its_paired_test_uses():
    """A pair's MAC is tested with the sd of its debiased difference from a second bootstrap
    level; the plan's SE_diff for it is that sd, not the replicate differences' (which the
    other metrics use, as their tests do)."""
    from metrics import analyze
    from metrics.special import ndtri

    flat = Population.example(zipf=0.3)  # frequent markers: both models get one marker set
    run = sample({"a": flat, "b": flat}, 120, 8)
    rows = analyze(run, bootstrap=100, seed=5, threshold=2, compare=True).comparisons
    reps = replicates(run, bootstrap=100, seed=5, threshold=2)
    mine = _quantities(reps)
    mac = rows.filter(pl.col("metric") == "MAC").row(0, named=True)
    assert mac["same_markers"] and mac["ci_method"].endswith("sd from a two-level bootstrap")
    tested = (mac["ci_hi"] - mac["ci_lo"]) / (2 * ndtri(0.975))
    assert mine[((0, 1), "metric", "MAC", "")][1] == pytest.approx(tested, rel=1e-9)
    # I-AvgMAE keeps the paired replicate differences' sd.
    a, b = (reps.metrics[g]["I-AvgMAE"] for g in (0, 1))
    d = (a.corrected if a.corrected is not None else a.values)[1:] - (
        b.corrected if b.corrected is not None else b.values
    )[1:]
    assert mine[((0, 1), "metric", "I-AvgMAE", "")][1] == pytest.approx(np.std(d, ddof=1))
