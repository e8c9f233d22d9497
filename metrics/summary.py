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
