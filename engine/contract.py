"""The data contract (docs/method.md §8): Arrow schemas shared by the engine and the analysis.

Defined once here and imported by both sides. Every file written carries schema metadata:
schema version, run id and the config hash of the stage that wrote it (`with_metadata`).
"""

from __future__ import annotations

import pyarrow as pa

SCHEMA_VERSION = "1"
NO_HEDGE = "<no_hedge>"

# ---- scored run (input of `mic analyze`) -------------------------------------------------------

RESPONSES = pa.schema(
    [
        ("model", pa.string()),
        ("task", pa.string()),
        ("split", pa.string()),
        ("prompt", pa.string()),
        ("item_id", pa.string()),
        ("correct", pa.bool_()),
        ("n_sentences", pa.int32()),
    ]
)

SENTENCES = pa.schema(
    [
        ("model", pa.string()),
        ("task", pa.string()),
        ("split", pa.string()),
        ("prompt", pa.string()),
        ("item_id", pa.string()),
        ("sentence_idx", pa.int32()),
        ("marker", pa.string()),
        ("raw_marker", pa.string()),
        ("confidence", pa.float64()),
        ("decisiveness", pa.float64()),
    ]
)

# Keys that identify a response; `prompt` may be absent from user files (one prompt).
RESPONSE_KEY = ("model", "task", "split", "prompt", "item_id")

# ---- generations (engine output; one row per item x sample) -----------------------------------

TOPK_ENTRY = pa.struct([("token_id", pa.int32()), ("logprob", pa.float32())])

GENERATIONS = pa.schema(
    [
        ("run_id", pa.string()),
        ("unit_id", pa.string()),
        ("model", pa.string()),
        ("task", pa.string()),
        ("split", pa.string()),
        ("prompt", pa.string()),
        ("item_id", pa.string()),
        ("sample_idx", pa.int32()),
        ("seed", pa.int64()),
        ("prompt_text", pa.string()),
        ("text", pa.string()),
        ("token_ids", pa.list_(pa.int32())),
        ("logprobs", pa.list_(pa.float32())),
        ("top_logprobs", pa.list_(pa.list_(TOPK_ENTRY))),
        ("cumulative_logprob", pa.float64()),
        ("finish_reason", pa.string()),
        ("error", pa.string()),
        ("prompt_tokens", pa.int32()),
        ("gen_seconds", pa.float64()),
    ]
)


def with_metadata(schema: pa.Schema, run_id: str, config_hash: str, **extra: str) -> pa.Schema:
    """Return `schema` carrying the contract's metadata (schema version, run id, config hash)."""
    meta = {"schema_version": SCHEMA_VERSION, "run_id": run_id, "config_hash": config_hash}
    meta.update(extra)
    return schema.with_metadata({k: str(v) for k, v in meta.items()})
