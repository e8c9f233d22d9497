"""The judge a scoring run uses, started on first use: a vLLM engine in this process or an HTTP server."""

from __future__ import annotations

import logging
from typing import Any

from engine.config.judges import ScoreSettings
from engine.errors import redact_url

logger = logging.getLogger(__name__)


class JudgePool:
    """Starts the judge engine on first use (only stages that are not done need it).

    Args:
        settings: Judge settings.
        judge: Use this judge instead of starting one (tests, a shared engine).
    """

    def __init__(self, settings: ScoreSettings, judge: Any | None = None) -> None:
        self.settings = settings
        self.judge = judge
        self._owned = judge is None

    def get(self) -> Any:
        """The judge, started if needed."""
        if self.judge is None and self.settings.base_url:
            from engine.generate.backends.http import HTTPJudge, HTTPSettings

            s = self.settings
            http = HTTPSettings(s.base_url, s.model, s.api_key_env, s.concurrency, s.max_retries)
            logger.info(f"score: judge {s.model} at {redact_url(s.base_url)}")
            self.judge = HTTPJudge(http, top_k=s.top_k)
        if self.judge is None:
            from engine.score.judges.vllm import VLLMJudge

            s = self.settings
            logger.info(f"score: starting judge engine {s.model}")
            self.judge = VLLMJudge(
                s.model, s.judge_engine_args(), top_k=s.top_k, chat=s.chat,
                chat_template_kwargs=s.chat_template_kwargs,
            )  # fmt: skip
        return self.judge

    def close(self) -> None:
        """Free the judge engine if this pool started it."""
        if self._owned and self.judge is not None:
            self.judge.close()
            self.judge = None
