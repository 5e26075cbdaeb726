"""Tests for kdtune.cli: argument routing, ``list`` and ``validate``; nothing here trains."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest

from kdtune import cli
from kdtune.config import registry_of
from kdtune.study import SweepPace

REPO = Path(__file__).resolve().parent.parent
SMOKE = REPO / "studies" / "smoke.yaml"
BAD = REPO / "tests" / "bad_studies" / "method_temprature.yaml"
KINDS = ("dataset", "model", "method", "loss", "penalty", "attack")


def _sections(out: str) -> list[tuple[str, list[str]]]:
    """``kdtune list`` output as [(header, [names])]: ``kinds:`` headers, then indented ``name  description``."""
    sections: list[tuple[str, list[str]]] = []
    for line in out.splitlines():
        if line and not line.startswith(" "):
            sections.append((line, []))
        elif line.strip():
            sections[-1][1].append(line.split()[0])
    return sections


def test_list_prints_every_registered_name(capsys):
    assert cli.main(["list"]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    sections = _sections(out)
    assert [header for header, _ in sections] == ["datasets:", "models:", "methods:", "losses:", "penalties:", "attacks:"]
    listed = [[*registry_of(kind).names(), *(form for form, _ in registry_of(kind).reference_forms)] for kind in KINDS]
    assert [names for _, names in sections] == listed
    assert "torchvision:<Class>" in listed[0] and "package.module:function" in listed[1]  # the reference forms


def test_validate_smoke_exits_0(capsys, clean_cwd):
    assert cli.main(["validate", str(SMOKE)]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert out.count("\n") == 1 and ": ok (4 trials over " in out
    assert list(clean_cwd.iterdir()) == []


@pytest.fixture
def fake_run(monkeypatch):
    """``kdtune.study.run_study`` replaced by a recorder: no data, no Ray, no training."""
    calls: list[dict] = []

    def run_study(cfg, *, address=None, **kwargs):
        calls.append({"cfg": cfg, "address": address, **kwargs})
        records = [SimpleNamespace(status="COMPLETE"), SimpleNamespace(status="ERROR")]
        pace = SweepPace(2, 7.2, "1 CPU", 2, "1 node(s), 2 CPU(s), 0 GPU(s)")  # 2 trials in 7.2 s: 1,000 an hour
        return SimpleNamespace(records=records, hypervolume=0.25, mlflow_link=None, report={"report_html": "reports/smoke.html"},
                               pace=pace)

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr("kdtune.study.run_study", run_study)
    return calls


@pytest.mark.parametrize(
    "argv",
    [[str(SMOKE)], ["run", str(SMOKE)]],
    ids=["bare_study_means_run", "explicit_run"],
)
def test_run_routing(argv, fake_run, capsys):
    assert cli.main(argv) == 0
    assert len(fake_run) == 1
    assert fake_run[0]["cfg"].name == "smoke"
    assert fake_run[0]["address"] is None
    out, _ = capsys.readouterr()
    assert "1/2 trials complete; hypervolume 0.2500" in out
    assert "report: reports/smoke.html" in out
    assert ("sweep: 2 trials ended in 7.2 s of sweep: 1,000 trials/hour (1 CPU per trial, up to 2 at once; "
            "Ray: 1 node(s), 2 CPU(s), 0 GPU(s))") in out


def test_run_passes_only_the_flag_so_the_study_file_can_beat_the_environment(fake_run, monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", "ray://env:10001")  # resolved later by init_ray, after ray.address
    assert cli.main(["run", str(SMOKE), "--address", "ray://head:10001"]) == 0
    assert cli.main([str(SMOKE)]) == 0
    assert [c["address"] for c in fake_run] == ["ray://head:10001", None]


def test_run_bad_study_never_reaches_the_runner(fake_run, capsys):
    assert cli.main([str(BAD)]) == 2
    assert fake_run == []
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("kdtune: error: ") and err.count("\n") == 1


@pytest.mark.slow  # a fresh interpreter: seconds of imports
def test_python_m_kdtune_validate_bad_file(clean_cwd):
    proc = subprocess.run(
        [sys.executable, "-m", "kdtune", "validate", str(BAD)],
        capture_output=True, text=True, timeout=120, cwd=clean_cwd,
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.startswith("kdtune: error: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "did you mean 'temperature'?" in proc.stderr
    assert list(clean_cwd.iterdir()) == []


def test_an_unexpected_error_is_one_line_with_the_traceback_saved(monkeypatch, capsys, tmp_path):
    import kdtune.study

    def broken(cfg, **kwargs):
        raise ZeroDivisionError("division by zero\nsecond line")

    monkeypatch.setenv("KDTUNE_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(kdtune.study, "run_study", broken)
    assert cli.main(["studies/smoke.yaml"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("kdtune: internal error: ZeroDivisionError: division by zero (")
    assert "Traceback" in (tmp_path / "last-error.log").read_text()


# Both end in the crash handler while torch cannot be imported: directly, and through ``kdtune list``.
BROKEN_TORCH = {
    "handler": """
        from kdtune import cli
        try:
            import torch
        except ImportError:
            print(cli._save_traceback())
    """,
    "main": """
        import sys
        from kdtune import cli
        sys.exit(cli.main(["list"]))
    """,
}


@pytest.mark.parametrize("how", BROKEN_TORCH)
def test_the_crash_handler_reports_a_failed_torch_import_without_importing_torch(how, tmp_path):
    fake = tmp_path / "fake" / "torch"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text(
        "import os\n"
        "with open(os.environ['KDTUNE_TEST_TORCH_IMPORTS'], 'a') as f:\n"
        "    f.write('x')\n"
        "raise ImportError('torch is broken (simulated)')\n"
    )
    attempts, cache = tmp_path / "torch-imports", tmp_path / "cache"
    env = {
        **os.environ, "KDTUNE_CACHE_DIR": str(cache), "KDTUNE_TEST_TORCH_IMPORTS": str(attempts),
        "PYTHONPATH": os.pathsep.join([str(fake.parent), str(REPO), os.environ.get("PYTHONPATH", "")]),
    }  # fmt: skip
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(BROKEN_TORCH[how])], capture_output=True,
                          text=True, timeout=120, env=env, cwd=tmp_path)  # fmt: skip
    log = cache / "last-error.log"
    if how == "handler":
        assert (proc.returncode, proc.stderr, proc.stdout) == (0, "", f"{log}\n")
    else:
        assert proc.returncode == 1 and proc.stdout == "", proc.stderr
        assert proc.stderr.count("\n") == 1, proc.stderr  # one line: no second error from the handler
        assert proc.stderr.startswith("kdtune: internal error: ImportError: torch is broken (simulated)")
        assert f"traceback saved to {log}" in proc.stderr
    assert "ImportError: torch is broken (simulated)" in log.read_text()
    assert attempts.read_text() == "x"  # torch was tried once, by the failing code, never by the handler
