"""Validated, frozen configuration: the sweep spec (`sweep`), built once from TOML plus overrides."""
