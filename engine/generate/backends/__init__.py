"""Generation backends: the vLLM engine, a deterministic fake, and an OpenAI-compatible HTTP client."""
