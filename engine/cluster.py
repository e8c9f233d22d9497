"""Ray: starting or joining a cluster, and the bootstrap's sums as Ray tasks over item shards.

`init_ray` is the one place Ray starts (generation, judges, `mic analyze --ray`).

The analysis (`metrics`) never imports Ray: it takes a `group_sums` function, and `ray_group_sums`
wraps the metrics' own shard kernel (passed in, so this module imports no metrics) into one that splits the items into shards, sums each shard in a Ray task and adds the
partial sums on the driver. With Poisson(1) weights keyed by item, a replicate's sum is a sum over
items, so the sharded result equals the single-process one up to the order of additions.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from engine.errors import UserError


def init_ray(
    ray_address: str | None = None,
    num_cpus: int | None = None,
    num_gpus: int | None = None,
    env: dict[str, str] | None = None,
) -> None:
    """Start (or join) Ray: local by default, a cluster when given an address (the one place).

    Args:
        ray_address: A cluster to join (None: a local Ray of this process).
        num_cpus: Logical CPUs of the local Ray.
        num_gpus: Logical GPUs of the local Ray (None: detected).
        env: Environment defaults for the driver and the workers (the user's values win), e.g.
            the generation engine's `engine_env(spec)`.
    """
    import ray

    if ray.is_initialized():
        return
    for key, value in (env or {}).items():
        os.environ.setdefault(key, value)
    try:
        _start_ray(ray, ray_address, num_cpus, num_gpus)
    except KeyboardInterrupt:
        # Ctrl-C while Ray starts: stop what was started (raylet agents outlive us otherwise).
        with contextlib.suppress(Exception):
            ray.shutdown()
        raise


def _start_ray(
    ray: Any, ray_address: str | None, num_cpus: int | None, num_gpus: int | None
) -> None:
    if ray_address:
        ray.init(address=ray_address, log_to_driver=True)
    else:
        kwargs: dict[str, Any] = {
            "address": "local",  # never join a cluster found in RAY_ADDRESS or /tmp/ray by accident
            "num_cpus": num_cpus or os.cpu_count() or 1,
            "include_dashboard": False,
            "object_store_memory": 200 << 20,
            # Actor output (vLLM's start-up warnings, tracebacks of a failed load) goes to Ray's
            # session logs; the driver prints progress and one line per failure itself.
            "log_to_driver": False,
        }
        if num_gpus is not None:
            kwargs["num_gpus"] = num_gpus
        ray.init(**kwargs)


def _shard_sums(kernel, ptr, keys, strata, group, values, seed, n_boot, scheme, n_groups):
    return kernel(ptr, keys, strata, group, values, seed, n_boot, scheme, n_groups=n_groups)


def shard_bounds(ptr: np.ndarray, n_shards: int) -> list[tuple[int, int]]:
    """Item ranges [i0, i1) of about equal row counts (an item's rows never split)."""
    n_items = len(ptr) - 1
    if n_items == 0:
        return []
    targets = np.linspace(0, ptr[-1], n_shards + 1)[1:-1]
    cuts = np.unique(np.r_[0, np.searchsorted(ptr, targets), n_items])
    return [(int(a), int(b)) for a, b in zip(cuts[:-1], cuts[1:]) if b > a]


# How long `--ray ADDRESS` waits for the cluster's head to answer before giving up: Ray's own
# connect loop retries for minutes without a word.
CONNECT_TIMEOUT_S = 30.0


def check_reachable(address: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Raise a one-line `UserError` unless something listens at the Ray address (HOST:PORT).

    Args:
        address: the `--ray` address, `HOST:PORT` or `ray://HOST:PORT`.
        timeout: seconds to wait for the TCP connection.
    """
    target = address.removeprefix("ray://")
    host, sep, port = target.rpartition(":")
    fix = "pass the head node's HOST:PORT (printed by `ray start --head`), or --ray alone for a local Ray"
    if not sep or not host or not port.isdigit():
        raise UserError(f"--ray {address} is not a HOST:PORT address", fix)
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except TimeoutError:
        raise UserError(
            f"--ray {address}: no answer within {timeout:.0f} s (unreachable host or firewall)", fix
        ) from None
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise UserError(f"--ray {address}: cannot connect ({reason})", fix) from None


def _connect(address: str, timeout: float) -> None:
    """Join the cluster at `address`, giving up after `timeout` seconds.

    Ray's connect loop does not return while something answers TCP but is not (yet) a Ray head,
    and it ignores SIGTERM meanwhile: it runs in a daemon thread, abandoned on timeout (the
    process then exits with the error; the thread holds no data of ours).
    """
    import threading

    errors: list[BaseException] = []

    def connect() -> None:
        try:
            init_ray(address)
        except BaseException as exc:  # reported by the caller's thread
            errors.append(exc)

    thread = threading.Thread(target=connect, name="ray-connect", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise UserError(
            f"--ray {address}: the Ray cluster did not accept the connection within {timeout:.0f} s",
            "check the address is the Ray head's GCS port (`ray status` on the head prints it)",
        )
    if errors:
        exc = errors[0]
        if isinstance(exc, ConnectionError | TimeoutError | RuntimeError):
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise UserError(
                f"--ray {address}: {first}", "check the address is the Ray head's GCS port"
            ) from None
        raise exc


def ray_group_sums(
    kernel: Callable,
    address: str | None = None,
    n_shards: int | None = None,
    connect_timeout: float = CONNECT_TIMEOUT_S,
) -> Callable:
    """A `group_sums` function for `metrics.analyze` that runs each item shard as a Ray task.

    Args:
        kernel: The single-process sums of one shard (`metrics.bootstrap.weighted_group_sums`).
        address: Ray cluster address; None starts (or joins) a local Ray.
        n_shards: shards per call (default: the cluster's CPU count, at least 2).
        connect_timeout: seconds to wait for the cluster at `address` to answer; checked here,
            before any analysis starts.

    Raises:
        UserError: nothing answers at `address` within `connect_timeout`.
    """
    if address:
        started = time.monotonic()  # one budget for both steps
        check_reachable(address, connect_timeout)
        _connect(address, max(1.0, connect_timeout - (time.monotonic() - started)))

    def group_sums(ptr, keys, strata, group, values, seed, n_boot, scheme, n_groups):
        if scheme != "poisson":
            raise UserError(
                f"--ray with --scheme {scheme}: multinomial draws are per task, not per item, so "
                "shard sums do not add up",
                "use --scheme poisson with --ray",
            )
        import ray

        init_ray(address)
        k = n_shards or max(2, int(ray.cluster_resources().get("CPU", 2)))
        task = ray.remote(num_cpus=1)(_shard_sums)
        refs = []
        for i0, i1 in shard_bounds(ptr, k):
            r0, r1 = int(ptr[i0]), int(ptr[i1])
            refs.append(
                task.remote(
                    kernel,
                    ptr[i0 : i1 + 1] - r0,
                    keys[i0:i1],
                    strata[i0:i1],
                    group[r0:r1],
                    values[r0:r1],
                    seed,
                    n_boot,
                    scheme,
                    n_groups,
                )  # fmt: skip
            )
        total = np.zeros((n_boot, n_groups, values.shape[1]))
        for part in ray.get(refs):
            total += part
        return total

    return group_sums
