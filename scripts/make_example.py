"""Write the bundled example scored run (metrics/data/example) from a fixed seed.

    python scripts/make_example.py [--out metrics/data/example]

Two models, five tasks (three with a train/test split, two with train only, which the
held-out analysis splits 50/50 by item), ~40 markers with a Zipf frequency, 1-3 sentences per
response. The numbers mean nothing; the shapes are realistic.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from metrics.synthetic import make_scored_run


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--out", default=str(Path(__file__).resolve().parents[1] / "metrics" / "data" / "example")
    )
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    responses, sentences = make_scored_run(
        n_models=2, n_tasks=5, n_items=800, n_markers=40, seed=20261128
    )
    responses.write_parquet(out / "responses.parquet")
    sentences.write_parquet(out / "sentences.parquet")
    print(f"wrote {out}: {responses.height} responses, {sentences.height} sentence rows")


if __name__ == "__main__":
    main()
