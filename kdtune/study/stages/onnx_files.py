"""Stage: the ONNX files of the Pareto front's students and of the teacher, into the report's folder."""

from __future__ import annotations

from kdtune.errors import KdtuneError
from kdtune.study._run import StudyRun
from kdtune.study.stages.serial_latency import TEACHER

FOLDER = "onnx"


def write(run: StudyRun) -> None:
    """``<reports>/onnx/<trial id>.onnx`` for each front member and ``teacher.onnx``, from the exports the serial
    latency made (``run.onnx``; none under runtime torch), into ``run.onnx_files``. ``*.onnx`` files left there by
    an earlier report (a front that has changed since) are removed."""
    folder = run.paths.reports / FOLDER
    front = [r.trial_id for r, on in zip(run.records, run.front()) if on]
    wanted = {name: folder / f"{'teacher' if name == TEACHER else name}.onnx"
              for name in (TEACHER, *front) if name in run.onnx}
    try:
        for stale in set(folder.glob("*.onnx")) - set(wanted.values()) if folder.is_dir() else ():
            stale.unlink()
        if wanted:
            folder.mkdir(parents=True, exist_ok=True)
        for name, path in wanted.items():
            path.write_bytes(run.onnx[name].file.data)
    except OSError as err:
        raise KdtuneError(f"cannot write the report's ONNX files into {folder}: {err.strerror or type(err).__name__};"
                          " set output.reports to a folder you can write to; every trial is stored, so `kdtune report`"
                          " rebuilds the report once fixed") from None
    run.onnx_files = wanted
