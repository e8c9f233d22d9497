"""Judges: the prompts they are asked and the engines that answer (a local vLLM judge; HTTP lives in
`engine.generate.backends.http`)."""
