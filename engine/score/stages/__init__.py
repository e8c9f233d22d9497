"""The scoring stages, one per module, in pipeline order (see `engine.score.pipeline`)."""
