import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from meobench.cli import app
from tests.result_files import make_case, make_document, write_run

runner = CliRunner()


@pytest.fixture
def exported(tmp_path):
    cases = [make_case("dense", samples_ms=(1, 2, 3, 4, 5)), make_case("moe-token", status="failed", error="boom")]
    folder = write_run(tmp_path / "run", make_document(cases))
    result = runner.invoke(app, ["export", str(folder), "--format", "pytest-benchmark"])
    assert result.exit_code == 0, result.output
    return folder / "pytest-benchmark.json"


def test_export_statistics_from_raw_samples(exported):
    document = json.loads(exported.read_text())
    [benchmark] = document["benchmarks"]  # the failed case has no samples to export
    stats = benchmark["stats"]
    # Samples 1..5 ms: min 1, max 5, mean and median 3 ms, 5 rounds of 1 iteration.
    assert stats["min"] == pytest.approx(0.001)
    assert stats["max"] == pytest.approx(0.005)
    assert stats["mean"] == pytest.approx(0.003)
    assert stats["median"] == pytest.approx(0.003)
    assert stats["rounds"] == 5
    assert stats["iterations"] == 1
    assert stats["data"] == pytest.approx([0.001, 0.002, 0.003, 0.004, 0.005])
    assert benchmark["params"]["variant"] == "dense"
    assert benchmark["extra_info"]["flops"] == 4_831_838_208


def test_export_is_read_by_pytest_benchmark(exported):
    completed = subprocess.run(
        [sys.executable, "-m", "pytest_benchmark", "compare", str(exported)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    assert "dense.loop.n8-k2-b8-l128" in completed.stdout


def test_export_unknown_format_exits_2(tmp_path):
    folder = write_run(tmp_path / "run", make_document([make_case()]))
    result = runner.invoke(app, ["export", str(folder), "--format", "csv"])
    assert result.exit_code == 2
    assert "--format 'csv' is not supported" in result.output
