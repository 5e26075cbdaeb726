"""Where trials run: a running Ray cluster at a resolved address, or a local Ray started here."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable

import ray

from kdtune.errors import KdtuneError

log = logging.getLogger(__name__)
# Every worker of a study's Ray job runs this setup first (Ray's public hook): trial actors then skip
# Tune's IPython import (``kdtune.compat.tune``) without kdtune patching anything at import time.
WORKERS = {"worker_process_setup_hook": "kdtune.compat.tune.skip_ipython_in_trials"}


def resolve_address(flag: str | None, configured: str | None) -> tuple[str | None, str]:
    """The Ray address a sweep uses and where it came from: ``--address`` > ``ray.address`` in the study
    file > $RAY_ADDRESS > none (start a local Ray). ``local`` anywhere also means a local Ray."""
    env = os.environ.get("RAY_ADDRESS")
    for value, source in ((flag, "--address"), (configured, "ray.address"), (env, "$RAY_ADDRESS")):
        if value:
            return (None, source) if value == "local" else (value, source)
    return None, "default"


def init_ray(
    address: str | None, num_cpus: int | None = None, *, configured: str | None = None,
    echo: Callable[[str], None] = log.info,
) -> None:
    """Connect to the running cluster at the resolved address (``resolve_address``), or start a local
    Ray on 127.0.0.1; a Ray already initialized in this process (tests) is reused as it is.

    Ray 2.60 rewrites a 127.0.0.1 node address to the machine's IP and its GCS listens on every
    interface: its token authentication, not the address, keeps a local Ray private (docs/cluster.md).
    """
    if ray.is_initialized():
        where = ray.get_runtime_context().gcs_address
        echo(f"Ray: reusing the Ray already running in this process at {where} ({cluster_summary()})")
        return
    address, source = resolve_address(address, configured)
    if address is None:
        # address="local": $RAY_ADDRESS must not turn "start a local Ray" into "connect".
        ray.init(address="local", num_cpus=num_cpus or os.cpu_count(), include_dashboard=False, runtime_env=WORKERS,
                 log_to_driver=False, logging_level=logging.WARNING, _node_ip_address="127.0.0.1")
        echo(f"Ray: local on this machine ({cluster_summary()}); pass --address to use a cluster")
        return
    _check_reachable(address, source)
    try:  # an existing cluster decides its own CPUs and node IPs: no num_cpus / _node_ip_address here
        ray.init(address=address, runtime_env=WORKERS, log_to_driver=False, logging_level=logging.WARNING)
    except ConnectionError as err:
        raise KdtuneError(_no_cluster(address, source, str(err).strip().splitlines()[0][:200])) from err
    except (ValueError, RuntimeError, ray.exceptions.AuthenticationError) as err:  # ray[client], versions, token
        raise KdtuneError(f"cannot use the Ray cluster at {address} (from {source}): {str(err)[:400]}") from err
    echo(f"Ray: cluster at {address} (from {source}; {cluster_summary()})")


def _check_reachable(address: str, source: str, timeout_s: float = 5.0) -> None:
    """Fail in seconds where Ray itself would retry for minutes: nothing listens at ``host:port``."""
    if address.startswith(("http://", "https://")):
        raise KdtuneError(
            f"Ray address {address} (from {source}) is a dashboard URL, which `ray job submit` takes; kdtune "
            "needs the cluster's own address: host:6379, ray://host:10001, or auto on a cluster node"
        )
    host, sep, port = address.split("://", 1)[-1].rpartition(":")
    if address == "auto" or not sep or not port.isdigit():
        return  # Ray resolves these itself and fails fast
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as err:
        raise KdtuneError(_no_cluster(address, source, err.strerror or str(err))) from err


def _no_cluster(address: str, source: str, reason: str) -> str:
    drop = {"--address": "drop --address", "ray.address": "remove ray.address from the study file"}
    return (f"no Ray cluster reachable at {address} (from {source}: {reason}); start one there with "
            f"`ray start --head`, or {drop.get(source, 'unset RAY_ADDRESS')} to run locally")


def cluster_summary() -> str:
    """``3 node(s), 3 CPU(s), 0 GPU(s)``: what the connected Ray has right now."""
    n_nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
    res = ray.cluster_resources()
    return f"{n_nodes} node(s), {res.get('CPU', 0):g} CPU(s), {res.get('GPU', 0):g} GPU(s)"
