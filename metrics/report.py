"""`mic report`: one self-contained HTML page of an analysis (and of the run behind it).

The page needs no network and no JavaScript: figures are PNGs embedded as base64 data URIs, the
CSS is inline, and collapsible sections use <details>. Markup is built here with `html.escape`
rather than a template engine: every string taken from data (model, prompt, task and marker
names, reasons, settings, summary keys) enters the markup through one function, `_e`, which is
the whole escaping policy and easy to audit; it also keeps the report free of a template file
(package data) and of a dependency beyond matplotlib.

Inputs, all optional except metrics.json:
    metrics.json, mic.parquet      `mic analyze --out DIR` (RUN_DIR itself or RUN_DIR/analysis)
    comparisons.parquet            paired comparisons (a significance matrix per metric)
    power.json                     `mic power --out` into the same directory: the plan
    summary.json, run.json         a generation run (`mic run`): throughput and the spec
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
import json
import platform
import textwrap
import warnings
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from engine.contract import RunLayout, atomic_write
from engine.errors import UserError
from metrics.summary import HEADLINE, MARCON

NO_INTERVAL = "no interval (run with --bootstrap B)"
ANALYSIS_SUBDIRS = (RunLayout.ANALYSIS,)
MIC_COLUMNS = ("model", "task", "marker", "count", "mic")
ALPHA = 0.05

BETTER = {
    "I-AvgMAE": "lower",
    "C-AvgMAE": "lower",
    "MRC": "higher",
    "MAC": "reported",
    "MCC": "reported",
    "I-AvgCV": "higher",
    "C-AvgCV": "lower",
    "I-AvgECE": "lower",
    "C-AvgECE": "lower",
    "I-AvgECE (10 bins)": "lower",
    "C-AvgECE (10 bins)": "lower",
    "NumECE": "lower",
}

CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:0 auto;max-width:1200px;
padding:1.5em;color:#1d1d1f;line-height:1.4}
h1{margin-bottom:.2em}h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:2em}
h3{margin-top:1.5em}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}
th,td{border:1px solid #d0d0d0;padding:.25em .6em;text-align:right;vertical-align:top}
th{background:#f3f3f5}td.l,th.l{text-align:left}
.muted{color:#777;font-size:.85em}.ci{color:#555;font-size:.85em}
.note{background:#fff8e1;border-left:4px solid #f0b400;padding:.4em .8em;margin:.6em 0}
.sig{background:#c8e6c9;font-weight:bold}.nsig{background:#f5f5f5}.diag{background:#e0e0e0}
img{max-width:100%;height:auto;display:block;margin:.5em 0}
figure{margin:1em 0}figcaption{color:#555;font-size:.9em}
details{margin:.6em 0}summary{cursor:pointer;font-weight:600}
pre{background:#f6f8fa;padding:.6em;overflow:auto;font-size:.8em;max-height:30em}
code{background:#f3f3f5;padding:0 .2em}
.mx{display:inline-block;vertical-align:top;margin:0 1.5em .8em 0}
"""


def _e(value: Any) -> str:
    """Escape any value for HTML text or a quoted attribute (the report's one escaping rule)."""
    return html.escape(str(value), quote=True)


# ---- locating the inputs ---------------------------------------------------------------------


@dataclass(frozen=True)
class ReportInputs:
    """Where the report's inputs live.

    Attributes:
        run_dir: The directory the user named.
        analysis_dir: The directory holding metrics.json (run_dir or run_dir/analysis).
        metrics: Parsed metrics.json.
        mic: mic.parquet, or None when absent.
        comparisons: comparisons.parquet, or None when absent.
        summary: summary.json of a generation run, or None.
        run: run.json of a generation run, or None.
        files: Every file read, for the provenance section.
        study: study.json of `mic study` (judges and analysis settings), or None.
        scoring: scored/score.json of `mic score` (judge calls and failures per stage), or None.
        power: power.json of `mic power --out` into the same directory, or None.
    """

    run_dir: Path
    analysis_dir: Path
    metrics: dict
    mic: pl.DataFrame | None
    comparisons: pl.DataFrame | None
    summary: dict | None
    run: dict | None
    files: list[Path] = field(default_factory=list)
    study: dict | None = None
    scoring: dict | None = None
    power: dict | None = None


def _looks_like_generation_run(d: Path) -> bool:
    return (d / RunLayout.RUN).is_file() or (d / RunLayout.SHARDS).is_dir()


def _looks_like_scored_run(d: Path) -> bool:
    return any(d.glob("responses*")) or any(d.glob("sentences*"))


def find_analysis_dir(run_dir: str | Path) -> Path:
    """Return the directory holding `metrics.json` for RUN_DIR.

    Args:
        run_dir: An analysis output directory, or a study directory with `analysis/metrics.json`.

    Returns:
        The analysis directory.

    Raises:
        UserError: RUN_DIR does not exist, is not a run, or has no analysis yet; the message says
            which command to run first.
    """
    d = Path(run_dir)
    if not d.exists():
        raise UserError(f"{d} does not exist", "pass the directory given to `mic analyze --out`")
    if not d.is_dir():
        raise UserError(
            f"{d} is a file, not a run directory",
            "pass the directory given to `mic analyze --out` (it holds metrics.json)",
        )
    for cand in (d, *(d / s for s in ANALYSIS_SUBDIRS)):
        if (cand / RunLayout.METRICS).is_file():
            return cand
    if _looks_like_generation_run(d):
        raise UserError(
            f"{d} holds a generation run but no analysis yet (no metrics.json in it or in "
            f"{d / 'analysis'})",
            f"score the generations, run `mic analyze SCORED --out {d / 'analysis'}`, "
            f"then `mic report {d}`",
        )
    if _looks_like_scored_run(d):
        raise UserError(
            f"{d} holds a scored run but no analysis yet (no metrics.json)",
            f"run `mic analyze {d} --out {d / 'analysis'}` first, then `mic report {d}`",
        )
    raise UserError(
        f"{d} is not a MIC run: it has no metrics.json (nor analysis/metrics.json)",
        "run `mic analyze SCORED --out DIR` first, then `mic report DIR`",
    )


def _read_json(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(
            f"{path}: not valid JSON ({exc})", "re-run the command that wrote it"
        ) from None
    return doc if isinstance(doc, dict) else {"value": doc}


def _read_parquet(path: Path) -> pl.DataFrame | None:
    if not path.is_file():
        return None
    try:
        return pl.read_parquet(path)
    except (pl.exceptions.PolarsError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(
            f"{path}: cannot be read as Parquet: {first}", "re-run `mic analyze`"
        ) from None


def load_inputs(run_dir: str | Path) -> ReportInputs:
    """Find and read everything the report shows.

    Args:
        run_dir: An analysis output directory or a study directory containing one.

    Returns:
        The inputs; optional ones are None when absent.

    Raises:
        UserError: No analysis found, or a file is unreadable / not shaped like metrics.json.
    """
    run_dir = Path(run_dir)
    adir = find_analysis_dir(run_dir)
    files = [adir / RunLayout.METRICS]
    metrics = _read_json(adir / RunLayout.METRICS) or {}
    if not isinstance(metrics.get("models"), dict):
        raise UserError(
            f'{adir / RunLayout.METRICS} has no "models" object; it was not written by `mic analyze`',
            f"re-run `mic analyze SCORED --out {adir}`",
        )
    mic = _read_parquet(adir / RunLayout.MIC)
    if mic is not None:
        missing = [c for c in MIC_COLUMNS if c not in mic.columns]
        if missing:
            raise UserError(
                f"{adir / 'mic.parquet'} lacks column(s) {', '.join(missing)}",
                f"re-run `mic analyze SCORED --out {adir}`",
            )
        if "prompt" not in mic.columns:  # one prompt, as in a scored run without the column
            mic = mic.with_columns(pl.lit("default").alias("prompt"))
    comparisons = _read_parquet(adir / RunLayout.COMPARISONS)
    files += [p for p in (adir / RunLayout.MIC, adir / RunLayout.COMPARISONS) if p.is_file()]
    summary = run = None
    # A generation run sits beside its analysis: in RUN_DIR, or the parent of RUN_DIR/analysis.
    # (`mic study` writes DIR/run.json, DIR/summary.json and DIR/analysis/.)
    near = list(
        dict.fromkeys([run_dir, adir, adir.parent if adir.name == RunLayout.ANALYSIS else adir])
    )
    for d in near:
        if summary is None and (d / RunLayout.SUMMARY).is_file():
            summary = _read_json(d / RunLayout.SUMMARY)
            files.append(d / RunLayout.SUMMARY)
        if run is None and (d / RunLayout.RUN).is_file():
            run = _read_json(d / RunLayout.RUN)
            files.append(d / RunLayout.RUN)
    study = None
    for d in near:
        if study is None and (d / RunLayout.STUDY).is_file():
            study = _read_json(d / RunLayout.STUDY)
            files.append(d / RunLayout.STUDY)
    scoring = None
    for d in near:
        record = d / RunLayout.SCORED / RunLayout.SCORE_RECORD
        if scoring is None and record.is_file():
            scoring = _read_json(record)
            files.append(record)
    power = None
    for d in near:
        if power is None and (d / "power.json").is_file():
            power = _read_json(d / "power.json")
            files.append(d / "power.json")
    return ReportInputs(
        run_dir, adir, metrics, mic, comparisons, summary, run, files, study, scoring, power
    )


# ---- formatting helpers ----------------------------------------------------------------------


def _num(x: Any, digits: int = 3) -> str:
    if x is None:
        return "n/a"
    if isinstance(x, bool):
        return str(x)
    if isinstance(x, int):
        return f"{x:,}"
    if isinstance(x, float):
        if not np.isfinite(x):
            return "n/a"
        if x != 0 and (abs(x) >= 1e5 or abs(x) < 10 ** (-digits)):
            return f"{x:.{digits}g}"
        return f"{x:,.{digits}f}"
    return str(x)


def _ci_of(entry: dict | None) -> tuple[float, float] | None:
    if not entry:
        return None
    ci = entry.get("ci")
    if (
        isinstance(ci, (list, tuple))
        and len(ci) == 2
        and all(isinstance(v, (int, float)) for v in ci)
    ):
        return float(ci[0]), float(ci[1])
    return None


def _metric_cell(entry: dict | None) -> str:
    """One metric as HTML: plug-in value, `debiased [ci]` (or the missing-interval note), n; or
    the reason."""
    if not entry:
        return '<td class="muted">absent</td>'
    if entry.get("value") is None:
        reason = entry.get("reason") or "undefined"
        return f'<td class="muted">n/a<br><span class="ci">{_e(reason)}</span></td>'
    ci = _ci_of(entry)
    # The interval is for the population value and sits around the debiased estimate (the
    # plug-in value is biased; docs/statistics.md): show them together, beside the plug-in.
    debiased = entry.get("debiased")
    label = "" if debiased is None else f"debiased {_num(debiased)} "
    title = f' title="{_e(entry["ci_method"])}"' if entry.get("ci_method") else ""
    ci_html = (
        f'<br><span class="ci"{title}>{_e(label)}[{_e(_num(ci[0]))}, {_e(_num(ci[1]))}]</span>'
        if ci
        else f'<br><span class="ci muted" title="{_e(NO_INTERVAL)}">no interval</span>'
    )
    n = entry.get("n")
    n_html = f'<br><span class="muted">n={_e(_num(n))}</span>' if n is not None else ""
    return f"<td>{_e(_num(entry['value']))}{ci_html}{n_html}</td>"


def _with_ci(value: Any, ci: Any) -> Any:
    """A value with its interval as one string when the interval is there."""
    if value is None or not isinstance(ci, (list, tuple)) or len(ci) != 2 or None in ci:
        return value
    return f"{_num(value)} [{_num(ci[0])}, {_num(ci[1])}]"


def _kv_table(pairs: list[tuple[str, Any]]) -> str:
    rows = []
    for key, value in pairs:
        if isinstance(value, (dict, list)):
            text = json.dumps(value, indent=1, sort_keys=True, default=str)
            cell = f"<pre>{_e(text)}</pre>" if len(text) > 60 else f"<code>{_e(text)}</code>"
        else:
            cell = _e(_field(str(key), value))
        rows.append(f'<tr><th class="l">{_e(key)}</th><td class="l">{cell}</td></tr>')
    return "<table>" + "".join(rows) + "</table>"


def _table(header: list[str], rows: list[list[Any]], left: int = 1) -> str:
    """A table of data values (all escaped); the first `left` columns align left."""
    head = "".join(
        f'<th class="{"l" if i < left else ""}">{_e(h)}</th>' for i, h in enumerate(header)
    )
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="{"l" if i < left else ""}">{_e(_num(v))}</td>' for i, v in enumerate(r)
        )
        + "</tr>"
        for r in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _conditions(metrics: dict) -> list[tuple[str, str]]:
    return [(m, p) for m, prompts in metrics["models"].items() for p in prompts]


def _label(model: str, prompt: str, single_prompt: bool) -> str:
    return model if single_prompt else f"{model} / {prompt}"


# ---- figures ---------------------------------------------------------------------------------


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


# Data strings reach matplotlib as plain text: no mathtext ("$x$"), no TeX.
_MPL_RC = {"text.parse_math": False, "text.usetex": False, "font.size": 9, "svg.fonttype": "none"}


def _short(text: str, width: int = 28) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 1] + "\u2026"


def _wrap(text: str, width: int = 14) -> str:
    return "\n".join(textwrap.wrap(" ".join(str(text).split()), width=width)[:3]) or str(text)


def _png(fig) -> str:
    """Render a figure to a base64 PNG data URI and close it."""
    plt = _plt()
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # missing glyphs for exotic marker strings
        # Figures use the constrained layout, so no bbox_inches="tight" (a second full draw).
        fig.savefig(buf, format="png", dpi=96)
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _figure(uri: str, alt: str, caption: str) -> str:
    return (
        f'<figure><img src="{uri}" alt="{_e(alt)}"><figcaption>{_e(caption)}</figcaption></figure>'
    )


@dataclass
class MicView:
    """MIC data of one (model, prompt): shared markers × tasks as numpy arrays."""

    tasks: list[str]
    markers: list[str]
    mic: np.ndarray  # [marker, task]
    count: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    has_ci: bool


def _mic_view(mic: pl.DataFrame, model: str, prompt: str, tasks: list[str], markers: list[str]):
    sub = mic.filter((pl.col("model") == model) & (pl.col("prompt") == prompt))
    shape = (len(markers), len(tasks))
    arrs = {k: np.full(shape, np.nan) for k in ("mic", "count", "ci_lo", "ci_hi")}
    mi = {m: i for i, m in enumerate(markers)}
    ti = {t: i for i, t in enumerate(tasks)}
    cols = [c for c in ("mic", "count", "ci_lo", "ci_hi") if c in sub.columns]
    for row in sub.select(["marker", "task", *cols]).iter_rows(named=True):
        i, j = mi.get(row["marker"]), ti.get(row["task"])
        if i is None or j is None:
            continue
        for c in cols:
            if row[c] is not None:
                arrs[c][i, j] = float(row[c])
    has_ci = bool(np.isfinite(arrs["ci_lo"]).any() and np.isfinite(arrs["ci_hi"]).any())
    return MicView(tasks, markers, arrs["mic"], arrs["count"], arrs["ci_lo"], arrs["ci_hi"], has_ci)


def _order_by_mean(view: MicView) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(view.mic, axis=1)
    return np.argsort(-np.nan_to_num(mean, nan=-1.0), kind="stable")


def _grid(n: int, max_cols: int = 6) -> tuple[int, int]:
    """Rows and columns of small multiples for n panels, rows as even as possible."""
    nrow = -(-n // max_cols)
    return nrow, -(-n // nrow)


def fig_heatmap(view: MicView) -> str:
    """MIC heatmap, shared markers (rows, by mean MIC) × tasks, cells annotated MIC and count."""
    plt = _plt()
    order = _order_by_mean(view)
    mic, count = view.mic[order], view.count[order]
    nm, nt = mic.shape
    fig, ax = plt.subplots(figsize=(2.6 + 1.05 * nt, 1.4 + 0.3 * nm), layout="constrained")
    vals = mic[np.isfinite(mic)]
    vmin, vmax = (float(vals.min()), float(vals.max())) if vals.size else (0.0, 1.0)
    if vmax - vmin < 0.05:
        vmin, vmax = vmin - 0.025, vmax + 0.025
    im = ax.imshow(np.ma.masked_invalid(mic), aspect="auto", cmap="viridis", vmin=vmin, vmax=vmax)
    cmap = im.get_cmap()
    for i in range(nm):
        for j in range(nt):
            if not np.isfinite(mic[i, j]):
                continue
            r, g, b, _ = cmap(im.norm(mic[i, j]))
            color = "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "white"
            n = "" if not np.isfinite(count[i, j]) else f" ({int(count[i, j])})"
            ax.text(j, i, f"{mic[i, j]:.2f}{n}", ha="center", va="center", fontsize=7, color=color)
    ax.set_xticks(range(nt), [_wrap(t) for t in view.tasks], rotation=30, ha="right")
    ax.set_yticks(range(nm), [_short(view.markers[k]) for k in order])
    ax.set_xlabel("task")
    ax.set_ylabel("marker")
    fig.colorbar(im, ax=ax, label="MIC (mean intrinsic confidence)", fraction=0.04, pad=0.02)
    ax.set_title("MIC per shared marker and task (cell: MIC (count))")
    return _png(fig)


PANEL_W = 1.0  # width of one task's panel in data units of the shared axes
PANEL_GAP = 0.18


@dataclass
class Panels:
    """Small multiples drawn in one axes per row (one task per panel, markers on a shared y).

    One axes per row instead of one per task keeps the tick and layout work of matplotlib (its
    main cost) independent of the number of tasks.
    """

    fig: Any
    rows: list[Any]  # axes, one per row
    where: list[tuple[Any, float]]  # per panel: (axes, x offset)


def _panels(n: int, nm: int, row_height: float) -> Panels:
    """Figure with `n` panels of `nm` marker rows each, at most six panels per row."""
    plt = _plt()
    nrow, ncol = _grid(n)
    fig, axes = plt.subplots(
        nrow,
        1,
        figsize=(2.4 + 1.75 * ncol, (1.1 + row_height * nm) * nrow),
        squeeze=False,
        layout="constrained",
    )
    rows = list(axes[:, 0])
    where = []
    for k in range(n):
        ax = rows[k // ncol]
        where.append((ax, (k % ncol) * (PANEL_W + PANEL_GAP)))
    for ax in rows:
        # Every row as wide as a full one, so a short last row keeps the panels' width.
        ax.set_xlim(-0.05, ncol * (PANEL_W + PANEL_GAP) - PANEL_GAP + 0.05)
        ax.set_ylim(nm - 0.4, -0.6)
        for side in ("top", "right", "bottom", "left"):
            ax.spines[side].set_visible(False)
    return Panels(fig, rows, where)


def _panel_frame(ax: Any, x0: float, nm: int, title: str) -> None:
    from matplotlib.patches import Rectangle

    ax.add_patch(Rectangle((x0, -0.5), PANEL_W, nm, fill=False, lw=0.8, ec="#444"))
    ax.text(x0 + PANEL_W / 2, -0.8, _short(title, 24), ha="center", va="bottom", fontsize=9)


def _panel_ticks(ax: Any, per_panel: list[tuple[float, list[float], list[str]]]) -> None:
    """X ticks of all panels of one row: (offset, positions in [0, 1], labels)."""
    pos, lab = [], []
    for x0, ps, ls in per_panel:
        pos += [x0 + p * PANEL_W for p in ps]
        lab += ls
    ax.set_xticks(pos, lab, fontsize=7)


def fig_forest(view: MicView) -> str:
    """One panel per task: each shared marker's MIC with its interval when present."""
    from matplotlib.ticker import MaxNLocator

    order = _order_by_mean(view)
    nm, nt = len(order), len(view.tasks)
    span = [view.mic, view.lo, view.hi] if view.has_ci else [view.mic]
    vals = np.concatenate([a[np.isfinite(a)] for a in span])
    xlo, xhi = (float(vals.min()), float(vals.max())) if vals.size else (0.0, 1.0)
    pad = max(0.04, 0.08 * (xhi - xlo))
    xlo, xhi = max(0.0, xlo - pad), min(1.0, xhi + pad)

    def scale(v: np.ndarray) -> np.ndarray:
        return (v - xlo) / (xhi - xlo) * PANEL_W

    ticks = [t for t in MaxNLocator(4).tick_values(xlo, xhi) if xlo <= t <= xhi]
    p = _panels(nt, nm, 0.22)
    y = np.arange(nm)
    row_ticks: dict[int, list] = {}
    for k, (ax, x0) in enumerate(p.where):
        _panel_frame(ax, x0, nm, view.tasks[k])
        for t in ticks:
            ax.axvline(x0 + scale(t), color="#e5e5e5", lw=0.7, zorder=0)
        x = view.mic[order, k]
        if view.has_ci:
            lo, hi = view.lo[order, k], view.hi[order, k]
            ok = np.isfinite(lo) & np.isfinite(hi) & np.isfinite(x)
            ax.hlines(y[ok], x0 + scale(lo[ok]), x0 + scale(hi[ok]), color="#4c72b0", lw=1.4)
        ax.plot(x0 + scale(x), y, "o", color="#c44e52", ms=4)
        if np.isfinite(x).any():
            ax.vlines(x0 + scale(np.nanmean(x)), -0.5, nm - 0.5, color="#999", ls="--", lw=0.8)
        row_ticks.setdefault(id(ax), []).append(
            (x0, [(t - xlo) / (xhi - xlo) for t in ticks], [f"{t:g}" for t in ticks])
        )
    for ax in p.rows:
        _panel_ticks(ax, row_ticks.get(id(ax), []))
        ax.set_yticks(y, [_short(view.markers[i]) for i in order])
        ax.set_xlabel("MIC")
    note = "intervals: bootstrap CI" if view.has_ci else NO_INTERVAL
    p.fig.suptitle(f"MIC of each shared marker per task ({note}; dashed: task mean)", fontsize=10)
    return _png(p.fig)


def fig_density(mic: pl.DataFrame, model: str, prompt: str, tasks: list[str]) -> str:
    """Density of MICs of the valid markers of each task (KDE, with a rug of the values)."""
    from scipy.stats import gaussian_kde

    plt = _plt()
    sub = mic.filter((pl.col("model") == model) & (pl.col("prompt") == prompt))
    if "valid" in sub.columns:
        sub = sub.filter(pl.col("valid"))
    fig, ax = plt.subplots(figsize=(8, 4.2), layout="constrained")
    grid = np.linspace(0, 1, 301)
    rug = len(tasks) <= 6  # one tick row per task: beyond six they drown the curves
    colors = plt.get_cmap("tab10" if len(tasks) <= 10 else "tab20")
    for k, task in enumerate(tasks):
        vals = sub.filter(pl.col("task") == task)["mic"].drop_nulls().to_numpy()
        vals = vals[np.isfinite(vals)]
        c = colors(k % colors.N)
        label = f"{_short(task, 24)} (n={vals.size})"
        if vals.size >= 2 and np.ptp(vals) > 0:
            dens = gaussian_kde(vals)(grid)
            ax.plot(grid, dens, color=c, lw=1.6, label=label)
        else:
            ax.plot([], [], color=c, label=label + " too few for a density")
        if rug:
            rug_y = np.full(vals.size, 0.02 + 0.025 * k)
            ax.plot(vals, rug_y, "|", color=c, ms=7, transform=ax.get_xaxis_transform())
    ax.set_xlim(0, 1)
    ax.set_ylim(bottom=0)
    if rug:
        ax.set_ylim(top=ax.get_ylim()[1] * (1.0 + 0.04 * len(tasks)))
    ax.set_xlabel("MIC of a valid marker")
    ax.set_ylabel("density (Gaussian KDE)")
    ax.set_title(
        "Are markers distinguishable? Density of MICs per task"
        + (" (ticks: markers)" if rug else "")
    )
    ax.legend(fontsize=8, loc="upper left", ncol=1 if len(tasks) <= 6 else 2, frameon=False)
    return _png(fig)


def fig_bump(view: MicView) -> str:
    """Rank of each shared marker's MIC in each task (1 = highest), lines across tasks."""
    plt = _plt()
    nm, nt = view.mic.shape
    ranks = np.full((nm, nt), np.nan)
    for j in range(nt):
        col = view.mic[:, j]
        ok = np.flatnonzero(np.isfinite(col))
        ranks[ok[np.argsort(-col[ok], kind="stable")], j] = np.arange(1, ok.size + 1)
    fig, ax = plt.subplots(figsize=(2.5 + 1.0 * nt, 1.4 + 0.24 * nm), layout="constrained")
    palette = plt.get_cmap("tab10")
    styles = ["-", "--", "-.", ":"]

    def color(i: int):
        return palette(i % 10)

    x = np.arange(nt)
    for i in range(nm):
        ls = styles[(i // 10) % len(styles)]
        ax.plot(x, ranks[i], ls, marker="o", color=color(i), lw=1.5, ms=4)
    # Marker names as tick labels on both sides (at their rank in the first / last task), so
    # matplotlib lays them out beside the axes instead of over the lines.
    ax.set_xlim(-0.25, nt - 1 + 0.25)
    ax.set_ylim(nm + 0.5, 0.5)
    ax.set_xticks(
        x,
        [_wrap(t) for t in view.tasks],
        rotation=30 if nt > 6 else 0,
        ha="right" if nt > 6 else "center",
    )
    right = ax.twinx()
    right.set_ylim(ax.get_ylim())
    for axis, col in ((ax, 0), (right, nt - 1)):
        idx = [i for i in np.argsort(ranks[:, col]) if np.isfinite(ranks[i, col])]
        pos = [ranks[i, col] for i in idx]
        names = [_short(view.markers[i], 22) for i in idx]
        labels = (
            [f"{n}  {int(r)}" for n, r in zip(names, pos)]
            if axis is ax
            else [f"{int(r)}  {n}" for n, r in zip(names, pos)]
        )
        axis.set_yticks(pos, labels, fontsize=8)
        for tick, i in zip(axis.get_yticklabels(), idx):
            tick.set_color(color(i))
    ax.set_ylabel("rank (1 = highest MIC)")
    ax.set_xlabel("task")
    ax.grid(axis="y", alpha=0.25)
    for axis in (ax, right):
        axis.spines["top"].set_visible(False)
    ax.set_title("Marker rank across tasks (stable order = flat lines)")
    return _png(fig)


def fig_frequency(
    mic: pl.DataFrame,
    model: str,
    prompt: str,
    tasks: list[str],
    threshold: int | None,
    top: int = 40,
) -> tuple[str, int, int]:
    """Occurrences of the most frequent markers per task (one panel per task, log x).

    Returns:
        (data URI, markers shown, markers in total).
    """
    sub = mic.filter((pl.col("model") == model) & (pl.col("prompt") == prompt))
    totals = (
        sub.group_by("marker")
        .agg(pl.col("count").sum())
        .sort(["count", "marker"], descending=[True, False])
    )
    markers = totals["marker"].to_list()[:top]
    counts = np.zeros((len(markers), len(tasks)))
    mi = {m: i for i, m in enumerate(markers)}
    ti = {t: j for j, t in enumerate(tasks)}
    for row in sub.select(["marker", "task", "count"]).iter_rows():
        if row[0] in mi and row[1] in ti and row[2] is not None:
            counts[mi[row[0]], ti[row[1]]] = row[2]
    nm, nt = counts.shape
    top_decade = max(1.0, np.log10(max(float(counts.max()), 1.0) * 1.6))

    def scale(v: np.ndarray) -> np.ndarray:  # log10 count -> panel x; a count of 1 is 0
        return np.log10(np.maximum(v, 1.0)) / top_decade * PANEL_W

    decades = [10.0**k for k in range(int(top_decade) + 1)]
    p = _panels(nt, nm, 0.2)
    y = np.arange(nm)
    row_ticks: dict[int, list] = {}
    for k, (ax, x0) in enumerate(p.where):
        _panel_frame(ax, x0, nm, tasks[k])
        for d in decades:
            ax.axvline(x0 + scale(np.float64(d)), color="#e5e5e5", lw=0.7, zorder=0)
        c = counts[:, k]
        colors = ["#4c72b0" if threshold is None or v >= threshold else "#bbbbbb" for v in c]
        # A count of 1 would have zero length on a log axis: give it a sliver.
        ax.barh(
            y, np.maximum(scale(c), np.where(c > 0, 0.01, 0.0)), left=x0, color=colors, height=0.75
        )
        if threshold:
            tx = x0 + scale(np.float64(threshold))
            ax.vlines(tx, -0.5, nm - 0.5, color="#c44e52", ls="--", lw=0.9)
        row_ticks.setdefault(id(ax), []).append(
            (x0, [float(scale(np.float64(d))) for d in decades], [f"{d:g}" for d in decades])
        )
    for ax in p.rows:
        _panel_ticks(ax, row_ticks.get(id(ax), []))
        ax.set_yticks(y, [_short(m) for m in markers])
        ax.set_xlabel("occurrences (log scale)")
    tau = f"; dashed: threshold \u03c4={threshold}, grey: below it" if threshold else ""
    p.fig.suptitle(f"Marker frequency per task (sentence-marker rows{tau})", fontsize=10)
    return _png(p.fig), nm, totals.height


# ---- sections --------------------------------------------------------------------------------


def _headline_names(metrics: dict) -> list[str]:
    preset = metrics.get("settings", {}).get("preset", "mic")
    if preset != "marcon":
        return list(HEADLINE)
    # MarCon's seven include NumECE (undefined without verbalized numbers, with its reason).
    return [*MARCON[:2], "NumECE", *MARCON[2:]]


def section_metrics(metrics: dict) -> str:
    """Headline metrics per model and prompt, per-task figures, variants in <details>."""
    conds = _conditions(metrics)
    names = _headline_names(metrics)
    any_ci = False
    head = "".join(
        f'<th>{_e(n)}<br><span class="muted">{_e(BETTER.get(n, ""))}</span></th>' for n in names
    )
    rows = []
    variants: list[str] = []
    for model, prompt in conds:
        block = metrics["models"][model][prompt]
        ms = block.get("metrics", {}) or {}
        cells = "".join(_metric_cell(ms.get(n)) for n in names)
        any_ci = any_ci or any(_ci_of(ms.get(n)) for n in names)
        shared = len(block.get("shared_markers", []) or [])
        rows.append(
            f'<tr><td class="l">{_e(model)}</td><td class="l">{_e(prompt)}</td>'
            f"<td>{shared}</td>{cells}</tr>"
        )
        for n in ms:
            if n not in names and n not in variants:
                variants.append(n)
    note = "" if any_ci else f'<p class="note">Intervals: {_e(NO_INTERVAL)}.</p>'
    for model, prompt in conds:  # a run too small for the intervals' measured coverage
        small = metrics["models"][model][prompt].get("interval_note")
        if small:
            note += f'<p class="note">{_e(_label(model, prompt, False))}: {_e(small)}</p>'
    out = [
        "<h2>Headline metrics</h2>",
        note,
        '<table><tr><th class="l">model</th><th class="l">prompt</th><th>shared markers</th>'
        f"{head}</tr>{''.join(rows)}</table>",
        '<p class="muted">Each cell: value, [interval], n. Under each name: which direction is '
        "better.</p>",
    ]
    if variants:
        vhead = "".join(f"<th>{_e(_label(m, p, False))}</th>" for m, p in conds)
        vrows = []
        for n in variants:
            cells = "".join(
                _metric_cell((metrics["models"][m][p].get("metrics") or {}).get(n))
                for m, p in conds
            )
            vrows.append(f'<tr><th class="l">{_e(n)}</th>{cells}</tr>')
        out.append(
            f"<details><summary>Variants ({len(variants)} metrics)</summary>"
            f'<table><tr><th class="l">metric</th>{vhead}</tr>{"".join(vrows)}</table></details>'
        )
    task_rows = []
    for model, prompt in conds:
        for task, t in (metrics["models"][model][prompt].get("tasks") or {}).items():
            t = t if isinstance(t, dict) else {}
            task_rows.append(
                [
                    model,
                    prompt,
                    task,
                    _with_ci(t.get("accuracy"), t.get("accuracy_ci")),
                    _with_ci(t.get("cmfg"), t.get("cmfg_ci")),
                    t.get("mfg"),
                    t.get("n_items"),
                    t.get("n_eval_items"),
                    t.get("n_valid_markers"),
                ]
            )
    if task_rows:
        out.append(
            "<details><summary>Per task: accuracy, cMFG, MFG, items, valid markers</summary>"
            + _table(
                [
                    "model",
                    "prompt",
                    "task",
                    "accuracy",
                    "cMFG",
                    "MFG",
                    "items",
                    "eval items",
                    "valid markers",
                ],
                task_rows,
                left=3,
            )
            + "</details>"
        )
    return "\n".join(out)


def section_figures(inputs: ReportInputs) -> str:
    """Per (model, prompt): heatmap, forest plot, density, bump chart, frequency."""
    metrics, mic = inputs.metrics, inputs.mic
    out = ["<h2>Markers</h2>"]
    if mic is None:
        out.append(
            f'<p class="note">No mic.parquet in {_e(inputs.analysis_dir)}: figures need it '
            "(re-run `mic analyze`).</p>"
        )
        return "\n".join(out)
    conds = _conditions(metrics)
    single_prompt = len({p for _, p in conds}) == 1
    threshold = metrics.get("settings", {}).get("threshold")
    plt = _plt()
    with plt.rc_context(_MPL_RC):
        for n, (model, prompt) in enumerate(conds):
            block = metrics["models"][model][prompt]
            tasks = list((block.get("tasks") or {}).keys())
            if not tasks:
                tasks = sorted(
                    mic.filter((pl.col("model") == model) & (pl.col("prompt") == prompt))["task"]
                    .unique()
                    .to_list()
                )
            shared = list(block.get("shared_markers") or [])
            label = _label(model, prompt, single_prompt)
            parts = []
            if shared and tasks:
                view = _mic_view(mic, model, prompt, tasks, shared)
                parts.append(
                    _figure(
                        fig_heatmap(view),
                        f"MIC heatmap of {label}",
                        f"MIC of the {len(shared)} shared markers (valid in every task) of {label}; "
                        "count = sentence-marker rows in the task.",
                    )
                )
                ci_note = (
                    " Lines: intervals: bootstrap CI."
                    if view.has_ci
                    else f" Intervals: {NO_INTERVAL}."
                )
                parts.append(
                    _figure(
                        fig_forest(view),
                        f"MIC forest plot of {label}",
                        f"Each shared marker's MIC per task, {label}.{ci_note}",
                    )
                )
                parts.append(_mic_table(view, label))
                if len(tasks) >= 2:
                    parts.append(
                        _figure(
                            fig_bump(view),
                            f"marker rank bump chart of {label}",
                            f"Rank of each shared marker's MIC within each task, {label}.",
                        )
                    )
            else:
                parts.append(
                    f'<p class="note">{_e(label)}: no marker is valid in every task '
                    f"(threshold {_e(threshold)}), so no heatmap, forest plot or bump chart.</p>"
                )
            if tasks:
                parts.append(
                    _figure(
                        fig_density(mic, model, prompt, tasks),
                        f"MIC density of {label}",
                        f"Density of the MICs of each task's valid markers, {label}: one narrow "
                        "peak means markers are hardly distinguishable.",
                    )
                )
                uri, shown, total = fig_frequency(mic, model, prompt, tasks, threshold)
                parts.append(
                    _figure(
                        uri,
                        f"marker frequency of {label}",
                        f"Occurrences of the {shown} most frequent of {total} markers per task, "
                        f"{label}.",
                    )
                )
            opened = " open" if n == 0 else ""
            out.append(
                f"<details{opened}><summary>{_e(label)} &mdash; {len(shared)} shared markers, "
                f"{len(tasks)} tasks</summary>{''.join(parts)}</details>"
            )
    return "\n".join(out)


def _mic_table(view: MicView, label: str) -> str:
    """The numbers behind the heatmap and forest plot: MIC [interval] (count) per cell."""
    head = "".join(f"<th>{_e(t)}</th>" for t in view.tasks)
    rows = []
    for i in _order_by_mean(view):
        cells = []
        for j in range(len(view.tasks)):
            mic, n = view.mic[i, j], view.count[i, j]
            if not np.isfinite(mic):
                cells.append('<td class="muted">n/a</td>')
                continue
            ci = (
                f' <span class="ci">[{view.lo[i, j]:.3f}, {view.hi[i, j]:.3f}]</span>'
                if np.isfinite(view.lo[i, j]) and np.isfinite(view.hi[i, j])
                else ""
            )
            count = f' <span class="muted">({int(n)})</span>' if np.isfinite(n) else ""
            cells.append(f"<td>{mic:.3f}{ci}{count}</td>")
        rows.append(f'<tr><th class="l">{_e(view.markers[i])}</th>{"".join(cells)}</tr>')
    return (
        f"<details><summary>MIC table of {_e(label)}: shared markers × tasks, MIC [interval] "
        f'(count)</summary><table><tr><th class="l">marker</th>{head}</tr>{"".join(rows)}'
        "</table></details>"
    )


def _pick_p(df: pl.DataFrame) -> str:
    for col in ("p_holm", "p_bh", "p_value"):
        if col in df.columns and df[col].drop_nulls().len():
            return col
    return ""


def section_significance(comparisons: pl.DataFrame | None) -> str:
    """A matrix per metric: difference (row − column) and adjusted p-value, significant shaded."""
    if comparisons is None:
        return ""
    need = {"model_a", "model_b", "metric", "diff"}
    missing = sorted(need - set(comparisons.columns))
    out = ["<h2>Paired comparisons</h2>"]
    if missing:
        out.append(
            f'<p class="note">comparisons.parquet lacks columns {_e(", ".join(missing))}; '
            "shown as a table only.</p>"
        )
        out.append(_table(comparisons.columns, [list(r) for r in comparisons.iter_rows()]))
        return "\n".join(out)
    df = comparisons
    for col in ("prompt_a", "prompt_b"):
        if col not in df.columns:
            df = df.with_columns(pl.lit("default").alias(col))
    pcol = _pick_p(df)
    single_prompt = (
        df.select(pl.concat_list("prompt_a", "prompt_b").explode().n_unique()).item() == 1
    )
    out.append(
        f'<p class="muted">Cell (row, column): difference row − column of the metric and the '
        f"{_e(pcol or 'p-value')} (shaded when below {ALPHA}). Adjusted p-values account for the "
        "family of comparisons.</p>"
    )
    metrics_in = df["metric"].unique(maintain_order=True).to_list()
    headline = set(HEADLINE) | set(MARCON)
    first = [m for m in metrics_in if m in headline or m.startswith("accuracy")]
    rest = [m for m in metrics_in if m not in first]
    blocks: dict[str, str] = {}
    for metric in metrics_in:
        sub = df.filter(pl.col("metric") == metric)
        labels: list[str] = []
        cells: dict[tuple[str, str], tuple[float | None, float | None, Any]] = {}
        for r in sub.iter_rows(named=True):
            a = _label(r["model_a"], r["prompt_a"], single_prompt)
            b = _label(r["model_b"], r["prompt_b"], single_prompt)
            for lab in (a, b):
                if lab not in labels:
                    labels.append(lab)
            p = r.get(pcol) if pcol else None
            ci = (r.get("ci_lo"), r.get("ci_hi"))
            cells[(a, b)] = (r["diff"], p, ci)
        head = "".join(f"<th>{_e(lab)}</th>" for lab in labels)
        body = []
        for a in labels:
            tds = []
            for b in labels:
                if a == b:
                    tds.append('<td class="diag"></td>')
                    continue
                if (a, b) not in cells:
                    # Each comparison is shown once: its mirror cell stays empty.
                    mirror = (b, a) in cells
                    tds.append(
                        '<td class="diag"></td>' if mirror else '<td class="muted">&ndash;</td>'
                    )
                    continue
                diff, p, ci = cells[(a, b)]
                sig = p is not None and p < ALPHA
                ci_txt = (
                    f'<br><span class="ci">[{_e(_num(ci[0]))}, {_e(_num(ci[1]))}]</span>'
                    if ci[0] is not None and ci[1] is not None
                    else ""
                )
                p_txt = f"<br>p={_e(_num(p))}" if p is not None else ""
                tds.append(
                    f'<td class="{"sig" if sig else "nsig"}">{_e(_num(diff, 3))}{ci_txt}{p_txt}</td>'
                )
            body.append(f'<tr><th class="l">{_e(a)}</th>{"".join(tds)}</tr>')
        tests = sub["test"].drop_nulls().unique().to_list() if "test" in sub.columns else []
        test = f' <span class="muted">({_e(", ".join(map(str, tests)))})</span>' if tests else ""
        blocks[metric] = (
            f'<div class="mx"><h3>{_e(metric)}{test}</h3>'
            f"<table><tr><th></th>{head}</tr>{''.join(body)}</table></div>"
        )
    out += [blocks[m] for m in first]
    if rest:
        out.append(
            f"<details><summary>Other metrics ({len(rest)})</summary>"
            + "".join(blocks[m] for m in rest)
            + "</details>"
        )
    out.append(
        "<details><summary>All comparisons</summary>"
        + _table(df.columns, [list(r) for r in df.iter_rows()], left=5)
        + "</details>"
    )
    return "\n".join(out)


def _scalars(d: dict) -> list[tuple[str, Any]]:
    return [(k, v) for k, v in d.items() if not isinstance(v, (dict, list))]


THROUGHPUT_FIRST = (
    "generated_tokens_per_second",
    "prompt_tokens_per_second",
    "rows",
    "error_rows",
    "units",
    "generated_tokens",
    "prompt_tokens",
    "wall_seconds",
    "busy_seconds",
    "gen_seconds",
    "generate_seconds",
    "gpu_seconds",
)


def _field(key: str, value: Any) -> str:
    """A summary.json value as a person reads it: epoch times as UTC times, ids unformatted."""
    if key in ("pid", "node_id") or key.endswith("_id"):
        return str(value)
    if key.endswith("_at") and isinstance(value, int | float) and value > 1e9:
        return dt.datetime.fromtimestamp(value, dt.timezone.utc).strftime("%H:%M:%S UTC")
    return _num(value)


def _by_key(entities: dict[str, dict], corner: str) -> str:
    """A key × entity table (models or actors as columns): long key lists stay readable."""
    keys: list[str] = []
    for v in entities.values():
        keys += [k for k, _ in _scalars(v) if k not in keys]
    keys.sort(key=lambda k: (THROUGHPUT_FIRST.index(k) if k in THROUGHPUT_FIRST else 99, k))
    head = "".join(f"<th>{_e(name)}</th>" for name in entities)
    rows = "".join(
        f'<tr><th class="l">{_e(k)}</th>'
        + "".join(f"<td>{_e(_field(k, v.get(k)))}</td>" for v in entities.values())
        + "</tr>"
        for k in keys
    )
    return f'<table><tr><th class="l">{_e(corner)}</th>{head}</tr>{rows}</table>'


def section_scoring(scoring: dict | None) -> str:
    """Judge calls per scoring stage: how many failed, and items left without a value."""
    if not isinstance(scoring, dict):
        return ""
    failed = scoring.get("failed_calls") if isinstance(scoring.get("failed_calls"), dict) else {}
    missing = scoring.get("ledger_rows") if isinstance(scoring.get("ledger_rows"), dict) else {}
    rows = []
    for stage in dict.fromkeys([*failed, *missing]):
        pair = failed.get(stage) if isinstance(failed.get(stage), list) else [0, 0]
        bad, calls = (pair + [0, 0])[:2]
        share = f"{bad / calls:.1%}" if isinstance(calls, int) and calls else "no judge calls"
        rows.append([stage, calls, bad, share, missing.get(stage, 0)])
    if not rows:
        return ""
    return (
        "<h2>Scoring</h2>"
        '<p class="muted">Judge calls per stage; a failed call got no answer at all (server error, '
        "transport, prompt too long). A stage whose failed share passes --max-failed-share is not "
        "done. Items without a value are listed in stages/STAGE/errors.jsonl.</p>"
        + _table(["stage", "judge calls", "failed", "failed share", "items without a value"], rows)
    )


def section_stopping(metrics: dict | None) -> str:
    """The wave log of a precision-stopped study (`mic study --target-width`, metrics.json's
    `stopping` block): items, width and state of every task after each wave."""
    block = (metrics or {}).get("stopping")
    if not isinstance(block, dict) or not isinstance(block.get("waves"), list):
        return ""
    rows = [
        [w.get("wave"), task, items, (w.get("widths") or {}).get(task),
         w.get("target_width"), (w.get("status") or {}).get(task)]
        for w in block["waves"] if isinstance(w, dict)
        for task, items in (w.get("items") or {}).items()
    ]  # fmt: skip
    final = ", ".join(
        f"{_e(t)}: {_e(f.get('items'))} items, {_e(f.get('status'))}"
        for t, f in (block.get("final") or {}).items()
        if isinstance(f, dict)
    )
    return (
        "<h2>Precision stopping</h2>"
        f'<p class="muted">{_e(block.get("rule"))}. Target width {_num(block.get("target_width"))}'
        f", {_num(block.get('wave_items'), 0)} items per task per wave. Final: {final}. "
        f"{_e(block.get('correction'))}; metrics.json's stopping.final_intervals hold the "
        "widened intervals, the tables above the last wave's bootstrap ones.</p>"
        + _table(["wave", "task", "items", "width (smoothed)", "target", "state"], rows, left=2)
    )


def section_planning(power: dict | None) -> str:
    """The plan of `mic power` (power.json): SE against items per task, detectable differences."""
    if not power or not isinstance(power.get("quantities"), list):
        return ""
    rows = [
        q for q in power["quantities"]
        if isinstance(q, dict) and q.get("kind") == "metric" and q.get("model_b") is None
        and q.get("se_pilot") is not None
    ]  # fmt: skip
    if not rows:
        return ""
    s = power.get("settings") or {}
    first = (rows[0].get("model"), rows[0].get("prompt"))
    mine = [q for q in rows if (q.get("model"), q.get("prompt")) == first]
    planned = _num(s.get("items_planned"), 0)
    out = [
        "<h2>Planning</h2>",
        f'<p class="muted">{_e(first[0])}/{_e(first[1])}: standard errors at the pilot\'s size '
        f"and at {planned} items per task (the pilot's bootstrap, resized by item), minimum "
        f"detectable differences at alpha {_e(s.get('alpha'))} and power {_e(s.get('power'))} "
        "(against an independent group like it; power.json has the paired ones).</p>",
    ]
    plt = _plt()
    with plt.rc_context(_MPL_RC):
        fig, ax = plt.subplots(figsize=(7.2, 3.6), layout="constrained")
        for q in mine:
            n0, n1 = q["n_pilot"], q["items_planned"]
            if not (n0 and n1 and q["se_pilot"] and q["se_planned"]):
                continue
            ax.plot([n0, n1], [q["se_pilot"], q["se_planned"]], marker="o", label=_short(q["name"]))
        from matplotlib.ticker import FuncFormatter, NullFormatter

        ax.set_xscale("log")
        ax.set_yscale("log")
        # Plain tick labels: mathtext is off for data strings (_MPL_RC), so no "10^k" labels.
        plain = FuncFormatter(lambda v, _: f"{v:g}")
        for axis in (ax.xaxis, ax.yaxis):
            axis.set_major_formatter(plain)
            axis.set_minor_formatter(NullFormatter())
        ax.set_xticks(sorted({q["n_pilot"] for q in mine} | {q["items_planned"] for q in mine}))
        ax.set_xlabel("items per task")
        ax.set_ylabel("standard error")
        ax.legend(fontsize=7, frameon=False, loc="center left", bbox_to_anchor=(1.0, 0.5))
        out.append(_figure(_png(fig), "standard error against items per task",
                           "Standard error of each metric at the pilot's size and the planned one "
                           "(log-log: the slope is the scaling exponent)."))  # fmt: skip
    header = ["metric", "n", "SE", "exponent", f"SE@{planned}", "MDD", f"MDD@{planned}"]
    if s.get("width") is not None:
        header.append(f"n for width {_e(s['width'])}")
    table = []
    for q in mine:
        row = [q["name"], _num(q["n_pilot"], 0), _num(q["se_pilot"], 4), _num(q["exponent"], 2),
               _num(q["se_planned"], 4), _num(q["mdd_pilot"], 4), _num(q["mdd_planned"], 4)]  # fmt: skip
        if s.get("width") is not None:
            row.append("-" if q.get("items_for_width") is None else q["items_for_width"])
        table.append(row)
    out.append(_table(header, table))
    return "\n".join(out)


def section_throughput(summary: dict | None) -> str:
    """Throughput of a generation run from summary.json, whatever keys it has."""
    if summary is None:
        return ""
    out = ["<h2>Throughput</h2>"]
    models = summary.get("models")
    models = (
        {str(m): v for m, v in models.items() if isinstance(v, dict)}
        if isinstance(models, dict)
        else {}
    )
    if models:
        out.append("<h3>Per model</h3>" + _by_key(models, "model"))
        actors = {
            f"{m} / {a}" if not str(a).startswith(f"{m}/") else str(a): av
            for m, v in models.items()
            if isinstance(v.get("actors"), dict)
            for a, av in v["actors"].items()
            if isinstance(av, dict)
        }
        if actors:
            out.append("<h3>Per actor</h3>" + _by_key(actors, "actor"))
    else:
        out.append('<p class="note">summary.json has no per-model throughput.</p>')
    out.append(_engine_settings(summary))
    rest = [(k, v) for k, v in summary.items() if k != "models"]
    if rest:
        out.append("<h3>Run</h3>" + _kv_table(rest))
    return "\n".join(out)


def _engine_settings(summary: dict) -> str:
    """The engine settings each model ran with, chosen for its vLLM build, and why."""
    settings = summary.get("settings")
    engine = settings.get("engine") if isinstance(settings, dict) else None
    if not isinstance(engine, dict) or not engine:
        return ""
    rows: list[list[Any]] = []
    for model, record in engine.items():
        if not isinstance(record, dict):
            continue
        build = f"{record.get('build')} ({record.get('build_detected_by')})"
        rows.append([model, "vLLM build", build, "detected", ""])
        for key, entry in record.items():
            if isinstance(entry, dict):
                value = entry.get("value")
                rows.append([model, key, value, entry.get("source", ""), entry.get("why", "")])
    seed_mode = settings.get("seed_mode", "per-sample")
    return f"<h3>Engine settings (seed mode: {_e(seed_mode)})</h3>" + _table(
        ["model", "setting", "value", "source", "why"], rows, left=5
    )


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def _mtime(p: Path) -> str:
    return dt.datetime.fromtimestamp(p.stat().st_mtime, dt.timezone.utc).strftime(
        "%Y-%m-%d %H:%M:%S UTC"
    )


def section_provenance(inputs: ReportInputs, generated: str) -> str:
    """Settings, versions, dates, config hash and the spec of the run."""
    import matplotlib

    out = ["<h2>Provenance</h2>"]
    ident: list[tuple[str, Any]] = []
    for src in (inputs.run or {}, inputs.summary or {}):
        for key in ("run_id", "hash", "config_hash"):
            if src.get(key) is not None and key not in dict(ident):
                ident.append((key, src[key]))
    versions = [
        ("mic-engine", _version("mic-engine")),
        ("numpy", np.__version__),
        ("polars", pl.__version__),
        ("matplotlib", matplotlib.__version__),
        ("python", platform.python_version()),
    ]
    dates = [("report generated", generated)] + [
        (f"{p.name} written", _mtime(p)) for p in inputs.files
    ]
    out.append(
        "<h3>Analysis settings</h3>"
        + _kv_table(list((inputs.metrics.get("settings") or {}).items()))
    )
    if ident:
        out.append("<h3>Run identity</h3>" + _kv_table(ident))
    out.append("<h3>Versions (of the report's environment)</h3>" + _kv_table(versions))
    out.append(
        "<h3>Dates and files</h3>"
        + _kv_table(dates + [("analysis directory", str(inputs.analysis_dir))])
    )
    if inputs.study is not None:
        out.append(
            "<details><summary>Study settings (study.json)</summary><pre>"
            + _e(json.dumps(inputs.study, indent=2, sort_keys=True, default=str))
            + "</pre></details>"
        )
    if inputs.run is not None:
        spec = inputs.run.get("spec", inputs.run)
        out.append(
            "<details><summary>Sweep spec (run.json)</summary><pre>"
            + _e(json.dumps(spec, indent=2, sort_keys=True, default=str))
            + "</pre></details>"
        )
    return "\n".join(out)


# ---- the page --------------------------------------------------------------------------------


def render_report(inputs: ReportInputs) -> str:
    """Return the report's HTML for already-loaded inputs."""
    generated = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    settings = inputs.metrics.get("settings") or {}
    conds = _conditions(inputs.metrics)
    sub = (
        f"{len(conds)} model/prompt condition(s) &middot; mode {_e(settings.get('mode', '?'))} "
        f"&middot; preset {_e(settings.get('preset', 'mic'))} &middot; threshold "
        f"{_e(settings.get('threshold', '?'))} &middot; bootstrap {_e(settings.get('bootstrap', 0))}"
    )
    body = [
        "<h1>MIC report</h1>",
        f'<p class="muted">{sub}<br>source: <code>{_e(inputs.run_dir)}</code> &middot; '
        f"generated {_e(generated)}</p>",
        section_metrics(inputs.metrics),
        section_figures(inputs),
        section_significance(inputs.comparisons),
        section_planning(inputs.power),
        section_stopping(inputs.metrics),
        section_scoring(inputs.scoring),
        section_throughput(inputs.summary),
        section_provenance(inputs, generated),
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        # No script may run even if escaping failed somewhere: the page needs none.
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "img-src data:; style-src 'unsafe-inline'\">"
        f"<title>MIC report</title><style>{CSS}</style></head><body>\n"
        + "\n".join(b for b in body if b)
        + "\n</body></html>\n"
    )


def build_report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write the self-contained HTML report of a run.

    Args:
        run_dir: An analysis output directory (with metrics.json) or a study directory holding
            `analysis/metrics.json`; summary.json / run.json of a generation run beside it are
            shown too.
        out: The HTML file to write; default RUN_DIR/report.html.

    Returns:
        The path written.

    Raises:
        UserError: RUN_DIR is not a run or has no analysis yet (the message names the command to
            run first), or an input file is unreadable.
    """

    from metrics.guards import check_output_file

    path = check_output_file(out if out is not None else Path(run_dir) / RunLayout.REPORT)
    inputs = load_inputs(run_dir)
    page = render_report(inputs)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, page)  # all or nothing, no temp file left behind
    return path
