"""``python -m benchmarks.gpu``: trials/hour of N concurrent trials on one GPU (how ``resources.gpu: 1/N`` packs).

Each of N worker processes runs kdtune's one-configuration training (``benchmarks._gpu_worker``, what a
sweep's trial runs) back to back for a fixed window; per cell (N, amp) it prints trials/hour, the speed-up
over the fewest workers, mean GPU utilisation (``nvidia-smi``, every 500 ms) and memory, and writes JSON.
Imports no Ray, Optuna or MLflow (the GPU machine has none); ``benchmarks/gpu.sh`` is the wrapper to run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import multiprocessing
import os
import platform
import queue
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks._gpu_report import add_speedups, cell_figures, table
from benchmarks._gpu_study import Sizes, write_study
from benchmarks._gpu_worker import Cell, WorkerSetup, forbidden_modules, worker_main

READY_TIMEOUT_S = 420.0  # a worker's start: imports, data, the first one's teacher training, warm-up
STOP_GRACE_S = 180.0  # after the window: the epoch or evaluation in flight
STARTUP_S, STOP_S = 30.0, 10.0  # what starting more workers, and ending a cell's trials in flight, may take


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu", description=__doc__)
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--tiny", action="store_true", help="tiny sizes: checks the benchmark runs (figures meaningless)")
    parser.add_argument("--concurrency", default="1,2,4,8", help="worker counts N, comma-separated")
    parser.add_argument("--amp", default="off,bf16", help="resources.amp settings, comma-separated (off, bf16, auto)")
    parser.add_argument("--window-s", type=float, default=None, help="measured seconds per cell (default 36; tiny 4)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per worker (default: CPUs / max N)")
    parser.add_argument("--epochs", type=int, default=None, help="student epochs per trial (default 6; tiny 1)")
    parser.add_argument("--n-train", type=int, default=None, help="training images (default 10,000; tiny 256)")
    parser.add_argument("--attack-steps", type=int, default=None, help="PGD steps of adversarial training (0: off)")
    parser.add_argument("--budget-s", type=float, default=450.0,
                        help="no cell or worker start begins that could end after this many seconds (gpu.sh: 470)")
    parser.add_argument("--root", type=Path, default=Path(".kdtune/gpu_bench"), help="data, study and teacher cache")
    parser.add_argument("--out", type=Path, default=Path("reports/gpu_benchmark.json"), help="JSON output path")
    args = parser.parse_args(argv)
    args.concurrency = sorted({int(n) for n in args.concurrency.split(",") if n.strip()})
    args.amp = [a.strip() for a in args.amp.split(",") if a.strip()]
    if not args.concurrency or min(args.concurrency) < 1:
        parser.error("--concurrency: positive worker counts, e.g. 1,2,4,8")
    if bad := [a for a in args.amp if a not in ("off", "bf16", "auto")]:
        parser.error(f"--amp: unknown setting {bad[0]!r}; choose from off, bf16, auto")
    if args.window_s is None:
        args.window_s = 4.0 if args.tiny else 36.0
    if args.threads is None:
        args.threads = max(1, (os.cpu_count() or 1) // max(args.concurrency))
    return args


def _log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class GpuSampler:
    """``nvidia-smi`` sampled every 500 ms in the background: mean utilisation and peak memory of one GPU."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled and shutil.which("nvidia-smi") is not None
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> None:
        if not self.enabled:
            return
        index = os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0] or "0"
        self.proc = subprocess.Popen(
            ["nvidia-smi", "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits",
             "-lms", "500", "-i", index], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)

    def stop(self) -> dict[str, Any]:
        if self.proc is None:
            return {"gpu_util_mean": None, "gpu_mem_peak_mib": None, "gpu_samples": 0}
        self.proc.terminate()
        out, _ = self.proc.communicate(timeout=10)
        self.proc = None
        samples = [[float(v) for v in line.split(",")] for line in out.splitlines() if line.count(",") == 1]
        if not samples:
            return {"gpu_util_mean": None, "gpu_mem_peak_mib": None, "gpu_samples": 0}
        return {"gpu_util_mean": round(sum(s[0] for s in samples) / len(samples), 1),
                "gpu_mem_peak_mib": max(s[1] for s in samples), "gpu_samples": len(samples)}


class Pool:
    """Worker processes (spawned) started as the cells need them; each has its own command queue."""

    def __init__(self, setup: WorkerSetup) -> None:
        self.setup, self.mp = setup, multiprocessing.get_context("spawn")
        self.results = self.mp.Queue()
        self.workers: list[tuple[Any, Any]] = []  # (process, commands)
        self.ready: list[dict[str, Any]] = []

    def grow(self, n: int) -> None:
        """Start workers until there are ``n``, and wait until each is ready (the first trains the teacher)."""
        while len(self.workers) < n:
            wid = len(self.workers)
            commands = self.mp.Queue()
            proc = self.mp.Process(target=worker_main, args=(wid, self.setup, commands, self.results), daemon=True)
            proc.start()
            self.workers.append((proc, commands))
            if wid == 0:  # the teacher is trained (and cached) once, before any other worker starts
                self.ready.append(self.wait("ready", 1, READY_TIMEOUT_S)[0])
        if len(self.ready) < n:
            self.ready += self.wait("ready", n - len(self.ready), READY_TIMEOUT_S)

    def send(self, cell: Cell, n: int) -> None:
        for _, commands in self.workers[:n]:
            commands.put(cell)

    def wait(self, kind: str, n: int, timeout_s: float) -> list[dict[str, Any]]:
        """The next ``n`` messages of ``kind``; a worker's error or death raises."""
        got: list[dict[str, Any]] = []
        until = time.monotonic() + timeout_s
        while len(got) < n:
            try:
                what, wid, payload = self.results.get(timeout=min(5.0, max(0.1, until - time.monotonic())))
            except queue.Empty:
                dead = [i for i, (p, _) in enumerate(self.workers) if p.exitcode is not None]
                if dead or time.monotonic() > until:
                    raise RuntimeError(f"workers {dead} died" if dead else f"no '{kind}' within {timeout_s:.0f} s")
                continue
            if what == "error":
                raise RuntimeError(f"worker {wid} failed:\n{payload}")
            got.append({"worker": wid, **payload})
        return got

    def close(self, grace_s: float = 5.0) -> None:
        """Ask every worker to stop; terminate those still running after ``grace_s`` (all together)."""
        for proc, commands in self.workers:
            if proc.is_alive():
                commands.put(None)
        until = time.monotonic() + grace_s
        for proc, _ in self.workers:
            proc.join(timeout=max(0.0, until - time.monotonic()))
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=5)


def _gpu_info() -> dict[str, str] | None:
    if shutil.which("nvidia-smi") is None:
        return None
    out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                         capture_output=True, text=True, timeout=30, check=False).stdout.splitlines()
    name, memory, driver = ([*(s.strip() for s in out[0].split(",")), "", "", ""])[:3] if out else ("", "", "")
    return {"name": name, "memory_total": memory, "driver": driver}


def _meta(args: argparse.Namespace, sizes: Sizes, pool: Pool, start: float) -> dict[str, Any]:
    import torch  # the driver never initialises CUDA: only the version

    return {
        "command": " ".join(["python -m benchmarks.gpu", *sys.argv[1:]]),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "device": args.device, "gpu": _gpu_info(), "cpus": os.cpu_count(), "threads_per_worker": args.threads,
        "python": platform.python_version(), "torch": torch.__version__, "tiny": args.tiny,
        "window_s": args.window_s, "sizes": sizes.as_dict(), "workers": pool.ready,
        "forbidden_in_driver": forbidden_modules(), "wall_s": round(time.monotonic() - start, 1),
    }


def measure_cell(pool: Pool, sampler: GpuSampler, n: int, amp: str, *, window_s: float, epochs: int) -> dict[str, Any]:
    """One cell: ``n`` workers run trials with ``amp`` for ``window_s`` while the GPU is sampled."""
    sampler.start()
    t0 = time.monotonic()
    cell = Cell(f"{n}/{amp}", amp, t0 + window_s)
    pool.send(cell, n)
    time.sleep(max(0.0, cell.deadline - time.monotonic()))
    gpu = sampler.stop()  # the window's samples only
    records = pool.wait("done", n, STOP_GRACE_S)  # the epoch or evaluation in flight ends first
    return {"n_workers": n, "amp": amp, **cell_figures(records, t0=t0, deadline=cell.deadline, epochs=epochs), **gpu}


def run_cells(args: argparse.Namespace, sizes: Sizes, pool: Pool, start: float) -> list[dict[str, Any]]:
    """Every cell that fits in ``--budget-s``, N ascending (workers start as needed), each amp per N; the JSON
    is rewritten after each cell, so a run stopped early keeps what it measured."""
    cells: list[dict[str, Any]] = []
    sampler = GpuSampler(args.device == "cuda")
    try:
        for n in args.concurrency:
            if time.monotonic() - start + args.window_s + STARTUP_S > args.budget_s:
                _log(f"stopping before N={n}: it would not end within --budget-s {args.budget_s:.0f}")
                break
            _log(f"starting workers up to {n} ...")
            pool.grow(n)
            for amp in args.amp:
                if time.monotonic() - start + args.window_s + STOP_S > args.budget_s:
                    _log(f"skipping N={n} amp={amp}: it would not end within --budget-s {args.budget_s:.0f}")
                    continue
                cells.append(measure_cell(pool, sampler, n, amp, window_s=args.window_s, epochs=sizes.epochs))
                _log(f"N={n} amp={amp}: {cells[-1]['trials_per_hour']:.0f} trials/h ({cells[-1]['trials_completed']} "
                     f"finished in the window); {time.monotonic() - start:.0f} s")
                add_speedups(cells)
                _write(args.out, {"meta": _meta(args, sizes, pool, start), "cells": cells})
    finally:
        sampler.stop()
    return cells


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    start = time.monotonic()
    sizes = (Sizes.tiny() if args.tiny else Sizes.full()).with_changes(
        epochs=args.epochs, n_train=args.n_train, attack_steps=args.attack_steps)
    study = write_study(args.root, sizes)
    pool = Pool(WorkerSetup(str(study.resolve()), args.device, args.threads, tuple(args.amp)))
    _log(f"{len(args.concurrency) * len(args.amp)} cells of {args.window_s:.0f} s on {args.device}, "
         f"{args.threads} thread(s) per worker; study {study}")
    signal.signal(signal.SIGTERM, _exit_on_term)  # `timeout` stops the driver: its workers stop with it
    try:
        cells = run_cells(args, sizes, pool, start)
    finally:
        pool.close()
    print(table(cells))
    if any(c["estimated"] for c in cells):
        print("* estimated from epochs (no trial of the cell finished in the window): raise --window-s")
    forbidden = sorted({m for c in cells for m in c["forbidden"]} | set(forbidden_modules()))
    print(f"Ray/Optuna/MLflow modules imported: {forbidden or 'none'}; {time.monotonic() - start:.0f} s; "
          f"written to {args.out}")
    return 0


def _exit_on_term(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def _write(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
