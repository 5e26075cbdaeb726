"""``kdtune submit STUDY --address http://HEAD:8265``: run a study as a Ray job on a cluster.

The study is validated here first. The job ships this folder (Ray's ``working_dir``; the study file must
be inside it) and any plugin package that lives outside it (``py_modules``), and runs
``python -m kdtune run STUDY --address auto`` on the head node. That copy of the folder is temporary,
so every output location must be absolute (on storage every node mounts) or a database / MLflow-server
URL, or ``--root DIR`` places them all under ``DIR/<study>``: then each scheduled submission adds its
trials to the same study instead of starting a fresh one that vanishes with the copy.
"""

from __future__ import annotations

import asyncio
import importlib.util
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kdtune.config import load_study, relative_locations, with_root
from kdtune.errors import ConfigError, KdtuneError
from kdtune.spec import StudyConfig

AGENT_WAIT_S = 60.0  # how long a freshly started head may take to bring up its job agent
INSTALL = "pip install -e '.[cluster]' (Ray's job client and dashboard: ray[default])"
_EXCLUDES = [".git", ".kdtune", "mlflow.db", "mlartifacts", "reports", "__pycache__", "*.pyc"]  # local outputs


class SubmitError(KdtuneError):
    """The cluster cannot be reached or refused the job (exit code 2: the address or the cluster to fix)."""

    exit_code = 2


def submit(study: Path, *, address: str, root: str | None = None, wait: bool = False,
           echo: Callable[[str], None] = print) -> int:
    """Submit ``study`` as a Ray job to the cluster whose dashboard is at ``address``; with ``wait``, stream
    its logs until it ends. Returns the exit code: 0 once submitted (or, with ``wait``, if the job
    succeeded), 1 if the job failed or was stopped."""
    cfg = load_study(study)
    if root is not None:
        with_root(cfg, root)  # the same check the job makes: an absolute root
    else:
        _check_locations(cfg)
    rel = _inside_cwd(study)
    client = _client(address)
    entrypoint = shlex.join(["python", "-m", "kdtune", "run", rel, "--address", "auto",
                             *(["--root", root] if root is not None else [])])
    runtime_env: dict[str, Any] = {"working_dir": str(Path.cwd()), "excludes": _EXCLUDES}
    modules = _outside_plugins(cfg)
    if modules:
        runtime_env["py_modules"] = modules
    submission = f"kdtune-{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    deadline = time.monotonic() + AGENT_WAIT_S
    while True:
        try:
            job_id = client.submit_job(entrypoint=entrypoint, runtime_env=runtime_env, submission_id=submission)
            break
        except Exception as err:  # noqa: BLE001 - the cluster's refusal, one line
            if "No available agent" in str(err) and time.monotonic() < deadline:
                time.sleep(2)  # a head that has just started: its job agent is not up yet
                continue
            if "No available agent" in str(err):
                raise SubmitError(f"the cluster at {address} has no job agent up after {AGENT_WAIT_S:g} s; check the "
                                  "head's logs/dashboard_agent.log (its port, 52365 unless "
                                  "--dashboard-agent-listen-port, may be taken by another Ray)") from None
            raise SubmitError(f"the cluster at {address} refused the job ({_reason(err)}); check the address and "
                              "the cluster's logs") from None
    echo(f"submitted {study} as Ray job {job_id} to {address}")
    echo(f"follow it: ray job logs --address {address} --follow {job_id}  (status: ray job status --address "
         f"{address} {job_id})")
    if not wait:
        return 0
    return _follow(client, job_id, echo)


def _check_locations(cfg: StudyConfig) -> None:
    relative = relative_locations(cfg)
    if relative:
        raise ConfigError(
            f"{', '.join(relative)} resolve(s) against the job's working directory, a temporary copy of this "
            "folder on the head node, so its results would vanish and the next submission would start a fresh "
            "study; give absolute paths on storage every node mounts (or database / MLflow-server URLs), or "
            "pass --root DIR to place them all under DIR/<study>"
        )


def _inside_cwd(study: Path) -> str:
    """The study file's path relative to the current folder (the one the job ships)."""
    try:
        return study.resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        raise ConfigError(f"{study} is outside the current folder, which is what the job ships; run kdtune submit "
                          "from the project folder that holds the study file") from None


def _outside_plugins(cfg: StudyConfig) -> list[str]:
    """The folders of the study's plugin packages that the working directory does not hold and that are
    not installed packages (those must be installed on the cluster's nodes)."""
    here, out = Path.cwd().resolve(), []
    for module in cfg.plugins:
        spec = importlib.util.find_spec(module.split(".")[0])
        if spec is None:
            continue  # validation has imported every plugin: a namespace without a spec is left to Ray
        folder = Path(next(iter(spec.submodule_search_locations or []), spec.origin or "")).resolve()
        installed = any(part in ("site-packages", "dist-packages") for part in folder.parts)
        if folder.is_relative_to(here) or installed or str(folder) in out:
            continue
        out.append(str(folder))
    return out


def _client(address: str) -> Any:
    try:
        from ray.job_submission import JobSubmissionClient
    except ImportError as err:
        raise ConfigError(f"kdtune submit needs Ray's job client ({_reason(err)}); {INSTALL}") from None
    try:
        return JobSubmissionClient(address)
    except Exception as err:  # noqa: BLE001 - unreachable, not a dashboard, refused
        if "Authentication" in type(err).__name__:
            raise SubmitError(f"the Ray cluster at {address} uses token authentication and this machine has no "
                              "token for it; set RAY_AUTH_MODE=token and give the cluster's token in "
                              "$RAY_AUTH_TOKEN or ~/.ray/auth_token (docs/cluster.md)") from None
        raise SubmitError(f"cannot reach a Ray dashboard at {address} ({_reason(err)}); give the head's dashboard "
                          "address (http://HEAD:8265), started with ray[default] installed") from None


def _follow(client: Any, job_id: str, echo: Callable[[str], None]) -> int:
    """Stream the job's logs to stdout until it ends; 0 if it succeeded."""

    async def tail() -> None:
        async for lines in client.tail_job_logs(job_id):
            sys.stdout.write(lines)
            sys.stdout.flush()

    asyncio.run(tail())
    info = client.get_job_info(job_id)
    status = str(getattr(info.status, "value", info.status))
    echo(f"Ray job {job_id}: {status}" + (f" ({info.message})" if info.message and status != "SUCCEEDED" else ""))
    return 0 if status == "SUCCEEDED" else 1


def _reason(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return f"{type(err).__name__}: {lines[-1][:200]}" if lines else type(err).__name__
