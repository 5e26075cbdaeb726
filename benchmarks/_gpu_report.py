"""The GPU packing benchmark's figures: trials/hour of one cell from its workers' trial records, and the table."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any


def trial_credit(trial: dict[str, Any], *, t0: float, deadline: float, typical_s: float | None,
                 epochs: int) -> tuple[float, bool]:
    """(share of ``trial`` done inside the window [t0, deadline], whether that share is an estimate).

    A trial finished inside the window counts 1. One that straddles the deadline counts the part of its own
    duration inside the window when it finished, else that part over ``typical_s`` (the mean duration of
    the cell's finished trials); without any, its epochs done in the window over ``epochs`` (an
    overestimate: evaluation is left out), flagged as an estimate.
    """
    start, end = trial["start"], trial["end"]
    inside = max(0.0, min(end, deadline) - max(start, t0))
    if trial["finished"]:
        return (1.0 if end <= deadline else inside / (end - start)), False
    if typical_s:
        return min(1.0, inside / typical_s), False
    done = sum(1 for t in trial["epochs"] if t <= deadline)
    return min(1.0, done / epochs), True


def cell_figures(records: Sequence[dict[str, Any]], *, t0: float, deadline: float, epochs: int) -> dict[str, Any]:
    """Trials/hour and trial statistics of one cell; ``records`` are its workers' ``run_cell`` results."""
    trials = [t for r in records for t in r["trials"]]
    finished = [t for t in trials if t["finished"]]
    typical = statistics.mean(t["end"] - t["start"] for t in finished) if finished else None
    credits = [trial_credit(t, t0=t0, deadline=deadline, typical_s=typical, epochs=epochs) for t in trials]
    window = deadline - t0
    equivalents = sum(c for c, _ in credits)
    reserved = [r["peak_reserved_mib"] for r in records if r["peak_reserved_mib"] is not None]
    accs = [t["val/acc"] for t in finished if "val/acc" in t]
    return {
        "window_s": round(window, 2),
        "trials_completed": sum(1 for t in finished if t["end"] <= deadline),
        "trials_started": len(trials),
        "trial_equivalents": round(equivalents, 3),
        "trials_per_hour": round(equivalents / window * 3600, 1),
        "estimated": any(est for _, est in credits),
        "mean_trial_s": round(typical, 2) if typical is not None else None,
        "val_acc_mean": round(statistics.mean(accs), 4) if accs else None,
        "torch_reserved_peak_mib": round(sum(reserved), 1) if reserved else None,
        "forbidden": sorted({m for r in records for m in r["forbidden"]}),
    }


def add_speedups(cells: list[dict[str, Any]]) -> None:
    """``speedup_vs_1``: each cell's trials/hour over that of the cell with the fewest workers, same amp."""
    for cell in cells:
        same = [c for c in cells if c["amp"] == cell["amp"]]
        base = min(same, key=lambda c: c["n_workers"])["trials_per_hour"]
        cell["speedup_vs_1"] = round(cell["trials_per_hour"] / base, 2) if base else None


COLUMNS = (("N", "n_workers"), ("amp", "amp"), ("trials/h", "trials_per_hour"), ("speed-up", "speedup_vs_1"),
           ("done", "trials_completed"), ("trial s", "mean_trial_s"), ("GPU util %", "gpu_util_mean"),
           ("GPU MiB", "gpu_mem_peak_mib"), ("torch MiB", "torch_reserved_peak_mib"), ("val acc", "val_acc_mean"))


def table(cells: Sequence[dict[str, Any]]) -> str:
    """One row per cell: workers, amp, trials/hour, speed-up, finished trials, GPU utilisation and memory."""
    rows = [tuple(title for title, _ in COLUMNS)]
    for cell in cells:
        row = tuple(_fmt(cell.get(key)) + ("*" if key == "trials_per_hour" and cell["estimated"] else "")
                    for _, key in COLUMNS)
        rows.append(row)
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join([lines[0], "  ".join("-" * w for w in widths), *lines[1:]])


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}" if abs(value) < 10 else f"{value:.0f}"
    return str(value)
