"""The deterministic tiny Llama model and byte-level BPE tokenizer (no hub needed).

The embedded default model for the demo, the tests and the device checks: a byte-level
BPE tokenizer trained on built-in sentences (vocab 512) and a 2-layer Llama (hidden 128, 2 heads,
1 KV head, head_dim 64, tied embeddings) with weights drawn from a fixed torch seed. Its text is
gibberish; it is for checking structure, determinism and agreement with transformers.

`builtin:tiny` in a sweep spec resolves through `resolve_model` to a copy built once into the
cache directory (`MIC_CACHE_DIR`, default `~/.cache/mic`).
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from engine.config.sweep import BUILTIN_MODEL_NAMES
from engine.errors import UserError

TINY_VERSION = "1"
TINY_SEED = 1234
VOCAB_SIZE = 512
SPECIAL_TOKENS = ("<unk>", "<s>", "</s>")
_MARKER = "mic_tiny_model.json"
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] }}: {{ message['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)

_BASE_SENTENCES = [
    "I think the answer is probably yes.",
    "It is almost certain that the value is correct.",
    "I am fairly sure about this, but not completely.",
    "Maybe the capital is a large city near the river.",
    "The result of the sum is a small number.",
    "Perhaps the question has more than one answer.",
    "It seems likely that the statement is false.",
    "I am not sure, although it could be true.",
    "Certainly the sun rises in the east every morning.",
    "Possibly the answer depends on the year.",
    "The model answered the question with confidence.",
    "Without doubt, two plus two equals four.",
    "It might be that the data are incomplete.",
    "Clearly the river flows into the sea.",
    "I believe the number is even, but I could be wrong.",
    "Question: what is the answer? Answer: I think it is no.",
]


def _training_sentences() -> list[str]:
    """Return the tokenizer's training text: fixed sentences plus the built-in questions."""
    from engine.tasks.builtin import builtin_task_names, builtin_task_path

    lines = list(_BASE_SENTENCES)
    for name in builtin_task_names():
        for line in builtin_task_path(name).read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                lines.append(f"Question: {row['question']}\nAnswer: {' or '.join(row['answers'])}")
    return lines


def build_tiny_model(directory: str | Path) -> Path:
    """Build the tiny model and tokenizer into `directory` (idempotent).

    Args:
        directory: Target directory; created if missing. A directory already holding this
            version of the model is left untouched.

    Returns:
        The directory, loadable by `vllm.LLM(model=...)` and `transformers`.
    """
    directory = Path(directory)
    marker = directory / _MARKER
    if marker.is_file() and json.loads(marker.read_text()).get("version") == TINY_VERSION:
        return directory
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_training_sentences(), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="</s>",
    )
    fast.chat_template = CHAT_TEMPLATE
    config = LlamaConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=64,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=fast.bos_token_id,
        eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id,
        initializer_range=0.2,  # peaked enough that samples differ from uniform noise
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_SEED)
        model = LlamaForCausalLM(config).to(torch.float32).eval()
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".tiny-", dir=directory.parent))
    os.chmod(staging, 0o755)
    try:
        model.save_pretrained(staging)
        fast.save_pretrained(staging)
        (staging / _MARKER).write_text(json.dumps({"version": TINY_VERSION, "seed": TINY_SEED}))
        if directory.exists():
            shutil.rmtree(directory)
        os.replace(staging, directory)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return directory


def cache_dir() -> Path:
    """Return the cache directory (`MIC_CACHE_DIR`, default `~/.cache/mic`)."""
    return Path(os.environ.get("MIC_CACHE_DIR") or Path.home() / ".cache" / "mic")


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _build_cached_tiny() -> Path:
    target = cache_dir() / "models" / f"tiny-v{TINY_VERSION}"
    with _file_lock(cache_dir() / "models" / f".tiny-v{TINY_VERSION}.lock"):
        return build_tiny_model(target)


def _planted(name: str) -> Callable[[], Path]:
    def build() -> Path:
        # engine.planted sits above the rooms (it trains a judge on the scoring prompt): a
        # by-name import keeps this room free of it.
        return importlib.import_module("engine.planted").model_path(name)

    return build


BUILTIN_MODELS: dict[str, Callable[[], Path]] = {
    name: _planted(name.split("-", 1)[1])
    if name.startswith("builtin:planted-")
    else _build_cached_tiny
    for name in BUILTIN_MODEL_NAMES
}


def resolve_model(path: str) -> str:
    """Resolve a model name of a spec to something `vllm.LLM(model=...)` loads.

    Args:
        path: `builtin:tiny` (built once into the cache directory), a local directory or a
            Hugging Face id (returned unchanged).

    Returns:
        The path or id to load.

    Raises:
        UserError: An unknown `builtin:` name.
    """
    if path.startswith("builtin:"):
        if path not in BUILTIN_MODELS:
            raise UserError(
                f"unknown built-in model '{path}'", f"use one of {sorted(BUILTIN_MODELS)}"
            )
        return str(BUILTIN_MODELS[path]())
    return path
