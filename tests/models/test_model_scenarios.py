"""Model keys of scenarios (sweep.model, sweep.placement, models:) and a model run through the CLI."""

import csv

import pytest
from typer.testing import CliRunner

from meobench.cases import expand
from meobench.cli import app
from meobench.errors import ScenarioError
from meobench.scenario import parse_scenario

MODEL_SCENARIO = """\
name: tiny-models
variants: [dense, moe-sequence, meo-sequence]
sweep:
  model: [bert-tiny, gpt2-tiny]
  placement: [linear]
  num_experts: 4
  top_k: 2
  batch_size: 2
  seq_len: 8
layer:
  padding_fraction: 0.25
measure: {warmup: 0, min_repeats: 1, max_repeats: 1, max_time_s: 0.1}
"""


def error_of(text: str) -> str:
    with pytest.raises(ScenarioError) as caught:
        parse_scenario(text, source="bad.yaml")
    return str(caught.value)


def test_expand_model_cases_take_preset_widths():
    text = MODEL_SCENARIO.replace("placement: [linear]", "placement: [linear, ffn]")
    text = text.replace("model: [bert-tiny, gpt2-tiny]", "model: [bert-tiny, gpt2-medium]")
    cases = expand(parse_scenario(text), device="cpu")
    # 2 models x 2 placements = 4 groups of 3 variants
    assert len(cases) == 12
    assert {(case.group.d_model, case.group.d_ff) for case in cases[:6]} == {(64, 256)}
    assert {(case.group.d_model, case.group.d_ff) for case in cases[6:]} == {(1024, 4096)}
    assert [case.group.expert_kind for case in cases[:6:3]] == ["linear", "ffn"]
    assert cases[0].case_id == "bert-tiny.dense.none.linear-n4-k2-b2-l8-float32-cpu"


def test_unknown_model_suggests_nearest():
    message = error_of("name: t\nvariants: [dense]\nsweep:\n  model: [bert-bsae]\n")
    assert "line 4, sweep.model" in message
    assert "did you mean 'bert-base'?" in message


def test_d_model_with_model_is_rejected():
    message = error_of("name: t\nvariants: [dense]\nsweep:\n  model: [gpt2]\n  d_model: [512]\n")
    assert "sweep.d_model: has no effect because sweep.model is set" in message


def test_unknown_placement():
    message = error_of("name: t\nvariants: [dense]\nsweep:\n  model: [gpt2]\n  placement: [block]\n")
    assert "sweep.placement[0]" in message


def test_pretrained_names_unknown_preset():
    message = error_of("name: t\nvariants: [dense]\nmodels:\n  pretrained: {bert: /tmp/x}\n")
    assert "models.pretrained" in message


@pytest.mark.slow
def test_model_run_writes_rows(tmp_path):
    scenario = tmp_path / "tiny-models.yaml"
    scenario.write_text(MODEL_SCENARIO)
    result = CliRunner().invoke(app, ["run", str(scenario), "--out", str(tmp_path / "out"), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    with (tmp_path / "out" / "results.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    # 2 models x 3 variants
    assert len(rows) == 6
    assert {row["status"] for row in rows} == {"ok"}
    linear_meo = [row for row in rows if row["variant"] == "meo-sequence"]
    assert len(linear_meo) == 2
    assert all(float(row["fidelity_rel_err"]) < 1e-5 for row in linear_meo)
    assert {row["model"] for row in rows} == {"bert-tiny", "gpt2-tiny"}
