from pathlib import Path

from typer.testing import CliRunner

from meobench.cli import app
from meobench.runs import defining_scenario, load_run
from meobench.scenario import dump_scenario, load_scenario

ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()


def test_committed_baseline_matches_ci_scenario():
    """Changing scenarios/ci.yaml needs a new baseline: run meobench baseline update."""
    baseline = load_run(ROOT / "reports" / "baselines" / "ci-cpu")
    scenario = dump_scenario(load_scenario(ROOT / "scenarios" / "ci.yaml"))
    assert defining_scenario(baseline.scenario) == defining_scenario(scenario)
    assert baseline.complete
    assert {case["status"] for case in baseline.cases} == {"ok"}
    assert all(isinstance(case["flops"], int) and case["flops"] > 0 for case in baseline.cases)


def test_baseline_update_writes_and_gates(tmp_path):
    scenario = tmp_path / "tiny.yaml"
    scenario.write_text(
        "name: tiny\nvariants: [dense, meo-sequence]\n"
        "sweep: {num_experts: 2, top_k: 1, batch_size: 1, seq_len: 4, d_model: 8, d_ff: 8}\n"
        "measure: {warmup: 0, min_repeats: 2, max_repeats: 2}\n"
    )
    out = tmp_path / "baseline"
    result = runner.invoke(app, ["baseline", "update", "--scenario", str(scenario), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "results.json").is_file()
    assert (out / "results.csv").is_file()
    assert not (out / "results.jsonl").exists()

    gated = runner.invoke(app, ["gate", str(out), str(out), "--only", "deterministic"])
    assert gated.exit_code == 0, gated.output
    assert "6 pass" in gated.output  # 2 cases x (flops, params, active_params)
