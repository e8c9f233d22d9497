"""A readable text summary of `metrics.json` (what `mic analyze` prints)."""

from __future__ import annotations

HEADLINE = ("I-AvgMAE", "C-AvgMAE", "MRC", "MAC", "MCC", "I-AvgCV", "C-AvgCV")
MARCON = (
    "I-AvgECE",
    "C-AvgECE",
    "I-AvgECE (10 bins)",
    "C-AvgECE (10 bins)",
    "MAC",
    "MRC",
    "I-AvgCV",
    "C-AvgCV",
)


def _fmt(entry: dict | None) -> str:
    if not entry or entry.get("value") is None:
        return "n/a"
    text = f"{entry['value']:.3f}"
    ci = entry.get("ci")
    if ci and ci[0] is not None:
        # The interval is for the population value, around the debiased estimate.
        debiased = entry.get("debiased")
        if debiased is not None:
            text += f"  debiased {debiased:.3f}"
        text += f" [{ci[0]:.3f}, {ci[1]:.3f}]"
    return text


def format_summary(doc: dict) -> str:
    """One block per (model, prompt): the headline metrics and a per-task line."""
    preset = doc["settings"].get("preset", "mic")
    names = MARCON if preset == "marcon" else HEADLINE
    lines = [
        f"mode={doc['settings']['mode']} threshold={doc['settings']['threshold']} "
        f"preset={preset} bootstrap={doc['settings']['bootstrap']}"
    ]
    for model, prompts in doc["models"].items():
        for prompt, block in prompts.items():
            lines.append("")
            lines.append(f"{model} / {prompt}  ({len(block['shared_markers'])} shared markers)")
            if block.get("interval_note"):
                lines.append(f"  note: {block['interval_note']}")
            width = max(len(n) for n in names)
            for name in names:
                entry = block["metrics"].get(name)
                reason = (
                    f"  ({entry['reason']})"
                    if entry and entry.get("value") is None and entry.get("reason")
                    else ""
                )
                lines.append(f"  {name:<{width}}  {_fmt(entry)}{reason}")
            lines.append(f"  {'task':<16} {'acc':>6} {'cMFG':>6} {'items':>6} {'markers':>7}")
            for task, t in block["tasks"].items():
                acc = "n/a" if t["accuracy"] is None else f"{t['accuracy']:.3f}"
                cm = "n/a" if t["cmfg"] is None else f"{t['cmfg']:.3f}"
                lines.append(
                    f"  {task:<16} {acc:>6} {cm:>6} {t['n_items']:>6} {t['n_valid_markers']:>7}"
                )
    return "\n".join(lines)


def format_comparisons(table, limit: int = 40) -> str:
    """The paired comparisons, most significant first (Holm-adjusted p-value)."""
    if table is None or table.height == 0:
        return "no comparisons"
    rows = table.sort("p_holm", nulls_last=True).head(limit).to_dicts()
    lines = [
        f"{'A':<22} {'B':<22} {'metric':<22} {'diff':>8} {'interval':>20} {'p':>7} {'p_holm':>7} {'p_bh':>7}"
    ]
    for r in rows:
        a = f"{r['model_a']}/{r['prompt_a']}"[:22]
        b = f"{r['model_b']}/{r['prompt_b']}"[:22]
        ci = "" if r["ci_lo"] is None else f"[{r['ci_lo']:.3f}, {r['ci_hi']:.3f}]"
        lines.append(
            f"{a:<22} {b:<22} {r['metric'][:22]:<22} {r['diff']:>8.3f} {ci:>20} "
            f"{r['p_value']:>7.3f} {r['p_holm']:>7.3f} {r['p_bh']:>7.3f}"
        )
    if table.height > limit:
        lines.append(f"... {table.height - limit} more rows in comparisons.parquet")
    return "\n".join(lines)
