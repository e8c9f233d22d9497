"""Does `mic power` plan right? Its predictions checked on a known-truth population (metrics.simulate).

    python benchmarks/planning.py [--pilots 20] [--studies 40] [--power-studies 200] [--n-boot 400]

Population: `Population.example()` (4 tasks x 10 markers, Zipf(0.8) marker frequencies, task
shifts of sd 0.08), held-out mode, threshold 10. Checks:

1. **SE at 1,000 items from a 200-item pilot.** `--pilots` pilots of 200 items per task, each
   planned with `metrics.power.power_plan(items=1000)`; `--studies` studies of 1,000 items per task,
   each bootstrapped the same way. Per metric: the mean predicted SE over the measured one
   (the mean bootstrap SE of the 1,000-item studies: the SE a study reports and its interval
   width follows), the share of single pilots within 15 %, and for reference the measured SE
   against the spread of the debiased estimates across the studies. Target: mean prediction
   within 15 % of the measured SE.
2. **Power at the predicted minimum detectable difference.** Pilots of two models answering the
   same 200 items (one population: the null) give the predicted MDD of I-AvgMAE at 1,000 items
   (mean over the pilots). Model b is then made less noisy (Beta concentration raised) until the
   population difference of I-AvgMAE equals that MDD, and `--power-studies` studies of 1,000
   items per task are tested (the paired bootstrap test of `mic analyze --compare`, alpha 0.05).
   Target: power 0.80 +- 0.07.
3. **Direction.** The same studies without the planted difference: the rejection rate should be
   about alpha.
4. **Precision-based stopping** (`metrics.stopping`): `--stop-studies` studies revealed in waves of
   100 items per task up to 1,000, analysed after each wave (B = 200), stopped when I-AvgMAE's
   interval is 0.006 wide; and `--stop-studies // 3` studies stopped per task when the task's
   shared-MIC intervals are 0.1 wide. The final intervals' coverage of the population value, with
   the widths smoothed across waves (the rule) and with the observed widths (what it corrects).
   Target: >= 0.93.

Single-threaded numba (NUMBA_NUM_THREADS=1), as the machine is shared.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from pathlib import Path

os.environ.setdefault("NUMBA_NUM_THREADS", "1")
# The repository root on the path (the packages), not this folder (a script named like a package
# here would shadow it).
_here = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _here]
sys.path.insert(0, str(_here.parent))

import numpy as np  # noqa: E402
from scipy import optimize  # noqa: E402

from metrics.debias import paired_difference  # noqa: E402
from metrics.power import PLAN_METRICS, _base, _quantities, power_plan, replicates  # noqa: E402
from metrics.simulate import Population, population_values, sample  # noqa: E402
from metrics.stopping import stopping_study  # noqa: E402

TOLERANCE = 0.15
POWER_TARGET = (0.73, 0.87)


def check_se(pop: Population, pilots: int, studies: int, n_boot: int, pilot_n: int, planned: int):
    """Predicted (from pilots) and measured (studies at `planned`) SE per metric."""
    predicted: dict[str, list[float]] = {}
    for r in range(pilots):
        plan = power_plan(sample(pop, pilot_n, 1000 + r), items=planned, bootstrap=n_boot, seed=r)
        for row in plan.table.filter(kind="metric").iter_rows(named=True):
            predicted.setdefault(row["name"], []).append(row["se_planned"])
    measured: dict[str, list[float]] = {}
    estimates: dict[str, list[float]] = {}
    for r in range(studies):
        rep = replicates(sample(pop, planned, 5000 + r), bootstrap=n_boot, seed=r)
        for key, (_, se, _) in _quantities(rep).items():
            if key[1] == "metric":
                measured.setdefault(key[2], []).append(se)
                m = rep.metrics[0][key[2]]
                base = _base(m)
                est = (
                    base[0]
                    if m.corrected is not None or key[2].startswith(("M",))
                    else (2 * base[0] - np.nanmean(base[1:]))
                )
                estimates.setdefault(key[2], []).append(est)
    rows = []
    for name in PLAN_METRICS:
        if name not in predicted or name not in measured:
            continue
        p, m = np.array(predicted[name]), np.mean(measured[name])
        rows.append(
            {
                "metric": name,
                "measured": m,
                "predicted": float(np.mean(p)),
                "ratio": float(np.mean(p) / m),
                "within": float(np.mean(np.abs(p / m - 1) <= TOLERANCE)),
                "sd_est": float(np.std(estimates[name], ddof=1)),
            }
        )
    return rows


def with_kappa(pop: Population, kappa: float) -> Population:
    return Population(**{**pop.__dict__, "concentration": kappa})


def check_power(pop: Population, pilots: int, studies: int, n_boot: int, pilot_n: int, planned: int,
                metric: str = "I-AvgMAE", alpha: float = 0.05):  # fmt: skip
    """Predicted MDD (paired, from null pilots), the planted population and the rejection rates."""
    mdd = []
    for r in range(pilots):
        plan = power_plan(
            sample({"a": pop, "b": pop}, pilot_n, 2000 + r), items=planned, bootstrap=n_boot,
            seed=r, alpha=alpha,
        )  # fmt: skip
        row = plan.table.filter(kind="metric", name=metric, model_b="b").row(0, named=True)
        mdd.append(row["mdd_planned"])
    target = float(np.mean(mdd))
    truth_a = population_values(pop)[metric]

    def gap(kappa: float) -> float:
        return truth_a - population_values(with_kappa(pop, kappa))[metric] - target

    kappa_b = optimize.brentq(gap, pop.concentration, pop.concentration * 20, xtol=1e-6)
    pop_b = with_kappa(pop, kappa_b)
    rates = {}
    for label, other in (("planted", pop_b), ("null", pop)):
        hits = 0
        for r in range(studies):
            run = sample({"a": pop, "b": other}, planned, 9000 + r)
            rep = replicates(run, bootstrap=n_boot, seed=r)
            d = paired_difference(rep.metrics[0][metric], rep.metrics[1][metric], 0.95, metric)
            hits += int(d is not None and d.p_value < alpha and (label == "null" or d.debiased > 0))
        rates[label] = hits / studies
    return target, float(np.std(mdd) / target), kappa_b, rates


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pilots", type=int, default=20)
    ap.add_argument("--studies", type=int, default=40)
    ap.add_argument("--power-studies", type=int, default=200)
    ap.add_argument("--n-boot", type=int, default=400)
    ap.add_argument("--pilot-items", type=int, default=200)
    ap.add_argument("--planned-items", type=int, default=1000)
    ap.add_argument("--stop-studies", type=int, default=200)
    args = ap.parse_args()
    pop = Population.example()
    t0 = time.time()
    rows = check_se(
        pop, args.pilots, args.studies, args.n_boot, args.pilot_items, args.planned_items
    )
    t1 = time.time()
    print(f"1. SE at {args.planned_items} items per task predicted from {args.pilot_items}-item pilots "
          f"({args.pilots} pilots, {args.studies} studies, B = {args.n_boot}; {t1 - t0:.0f} s)")  # fmt: skip
    print(f"{'metric':<20} {'measured SE':>11} {'predicted':>10} {'ratio':>6} {'pilots in 15%':>13} "
          f"{'SD of estimates':>15}  ok")  # fmt: skip
    for r in rows:
        ok = abs(r["ratio"] - 1) <= TOLERANCE
        print(f"{r['metric']:<20} {r['measured']:>11.5f} {r['predicted']:>10.5f} {r['ratio']:>6.2f} "
              f"{r['within']:>13.2f} {r['sd_est']:>15.5f}  {'yes' if ok else 'NO'}")  # fmt: skip
    target, spread, kappa_b, rates = check_power(
        pop, max(args.pilots // 2, 2), args.power_studies, args.n_boot, args.pilot_items,
        args.planned_items,
    )  # fmt: skip
    t2 = time.time()
    ok = POWER_TARGET[0] <= rates["planted"] <= POWER_TARGET[1]
    print(f"\n2. Power at the predicted MDD of I-AvgMAE at {args.planned_items} items (paired, "
          f"alpha 0.05, power 0.8; {t2 - t1:.0f} s)")  # fmt: skip
    print(f"   predicted MDD {target:.5f} (pilot-to-pilot spread {spread:.0%}), planted by "
          f"kappa_b = {kappa_b:.2f}: power {rates['planted']:.3f} over {args.power_studies} "
          f"studies, target 0.80 +- 0.07: {'yes' if ok else 'NO'}")  # fmt: skip
    print(f"3. Same studies, no difference: rejection rate {rates['null']:.3f} (alpha 0.05)")
    if args.stop_studies:
        print("\n4. Precision-based stopping, waves of 100 items per task up to 1,000 (B = 200)")
        print(f"{'rule':<34} {'studies':>7} {'intervals':>9} {'reached':>7} {'items':>6} "
              f"{'coverage':>8} {'smoothed':>8}")  # fmt: skip
        for label, metric, width, reps in (
            ("I-AvgMAE width 0.006", "I-AvgMAE", 0.006, args.stop_studies),
            ("per task: shared MICs width 0.1", None, 0.1, max(args.stop_studies // 3, 2)),
        ):
            for smooth in (False, True):
                t = time.time()
                df = stopping_study(pop, width, wave=100, max_items=1000, reps=reps,
                                    metric=metric, n_boot=200, smooth=smooth)  # fmt: skip
                cov = df.get_column("covered").mean()
                print(f"{label:<34} {reps:>7} {df.height:>9} {df.get_column('reached').mean():>7.2f} "
                      f"{df.get_column('items').mean():>6.0f} {cov:>8.3f} {'yes' if smooth else 'no':>8}"
                      f"  {'ok' if cov >= 0.93 else 'LOW'} ({time.time() - t:.0f} s)")  # fmt: skip
    print(f"\ncommand: NUMBA_NUM_THREADS=1 python benchmarks/planning.py "
          f"{shlex.join(sys.argv[1:])}".rstrip())  # fmt: skip


if __name__ == "__main__":
    main()
