"""A straightforward pandas implementation of the MIC table and the seven metrics (the seed's approach).

Per model: merge responses into sentence rows, group-by means for the MIC tables, a loop over
(reference, evaluation) task cells for the four MAE modes, scipy correlations per pair / marker.
Held-out protocol with explicit train/test splits, default (non-parity) conventions. Used only as
the baseline of `benchmarks/analyze_scale.py`; its numbers are checked against ours there.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import pearsonr, spearmanr

KEY = ["model", "prompt", "task", "split", "item_id"]


def fisher(x) -> float:
    x = np.asarray([v for v in x if np.isfinite(v)], dtype=float)
    return (
        float(np.tanh(np.mean(np.arctanh(np.clip(x, -0.9999, 0.9999))))) if len(x) else float("nan")
    )


def cmfg_default(resp: pd.DataFrame) -> float:
    r = resp.dropna(subset=["f"])
    if r.empty:
        return float("nan")
    b = np.minimum(np.floor(r["c"].to_numpy() * 10 + 1e-9).astype(int), 9)  # ties go up (SPEC)
    return float(r.groupby(b)["f"].mean().mean())


def analyze_pandas(responses: pd.DataFrame, sentences: pd.DataFrame, threshold: int = 10) -> dict:
    """Headline metrics per model: {model: {name: value}}."""
    df = sentences.merge(responses, on=KEY)
    # f and c per response, from sentence-level values.
    sent = df.drop_duplicates(subset=[*KEY, "sentence_idx"]).dropna(
        subset=["confidence", "decisiveness"]
    )
    sent = sent.assign(gap=(sent["decisiveness"] - sent["confidence"]).abs())
    per = sent.groupby(KEY).agg(
        gap=("gap", "sum"), c=("confidence", "mean"), n=("n_sentences", "first")
    )
    per["f"] = 1 - per["gap"] / per["n"]
    responses = responses.merge(per[["f", "c"]].reset_index(), on=KEY, how="left")
    df = df.merge(per[["f"]].reset_index(), on=KEY, how="left")
    out = {}
    for model, mdf in df.groupby("model"):
        ref = mdf[mdf["split"] == "train"]
        ev = mdf[(mdf["split"] == "test") & mdf["confidence"].notna()]
        counts = ref.groupby(["task", "marker"]).size().unstack("task")
        mic = ref.groupby(["task", "marker"])["confidence"].mean().unstack("task")
        mic = mic.where(counts >= threshold)
        tasks = list(mic.columns)
        shared = mic.dropna()
        mresp = responses[(responses["model"] == model) & (responses["split"] == "train")]
        acc = mresp.groupby("task")["correct"].mean()[tasks]
        cm = pd.Series({t: cmfg_default(g) for t, g in mresp.groupby("task")})[tasks]
        mae = {k: pd.DataFrame(index=tasks, columns=tasks, dtype=float) for k in (1, 2, 3, 4)}
        for a in tasks:
            mic_a = mic[a].dropna()
            for b in tasks:
                rows = ev[(ev["task"] == b) & ev["marker"].isin(mic_a.index)]
                err = (rows["marker"].map(mic_a) - rows["confidence"]).abs()
                rows = rows.assign(err=err)
                mae[1].loc[a, b] = err.mean()
                mae[2].loc[a, b] = rows.groupby("item_id")["err"].mean().mean()
                mae[3].loc[a, b] = rows.groupby("marker")["err"].mean().mean()
                mean_conf = rows.groupby("marker")["confidence"].mean()
                mae[4].loc[a, b] = (mic_a[mean_conf.index] - mean_conf).abs().mean()
        diag = np.eye(len(tasks), dtype=bool)
        res = {}
        for k in (1, 2, 3, 4):
            v = mae[k].to_numpy(dtype=float)
            res[f"I-AvgMAE (Mode {k})"] = float(np.nanmean(v[diag]))
            res[f"C-AvgMAE (Mode {k})"] = float(np.nanmean(v[~diag]))
        pairs = [
            spearmanr(shared[tasks[i]], shared[tasks[j]])[0]
            for i in range(len(tasks))
            for j in range(i + 1, len(tasks))
        ]
        res["MRC"] = fisher(pairs)
        res["MAC"] = fisher([spearmanr(shared.loc[m, tasks], acc)[0] for m in shared.index])
        res["MAC-P-all"] = fisher([pearsonr(shared.loc[m, tasks], acc)[0] for m in shared.index])
        res["MCC"] = fisher([spearmanr(shared.loc[m, tasks], cm)[0] for m in shared.index])
        res["I-AvgCV"] = float((mic.std() / mic.mean()).mean())
        res["I-AvgCV (shared)"] = float((shared.std() / shared.mean()).mean())
        res["C-AvgCV"] = float((shared.std(axis=1) / shared.mean(axis=1)).mean())
        out[model] = res
    return out
