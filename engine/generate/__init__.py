"""Generation: sweep spec -> work units -> backends on Ray actors -> durable shards in a run store.

Knows nothing of scoring, studies or metrics (checked by the import contracts in pyproject.toml).
"""
