"""Fixtures of the reliability tests (the session's Ray, tiny model and engine come from the root
conftest): the address driver subprocesses join."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture(scope="session")
def ray_address(ray_local: Any) -> str:
    """The GCS address of the session's Ray: driver subprocesses join it with --ray-address, so a
    SIGKILLed driver costs no Ray start-up (its actors die with it, as on a cluster)."""
    # Asked for a Ray that an earlier test shut down, Ray would start a new driver and join the
    # last cluster it recorded in /tmp/ray (possibly a test cluster long gone): a silent hang.
    assert ray_local.is_initialized(), "the session's Ray was shut down by an earlier test"
    return ray_local.get_runtime_context().gcs_address
