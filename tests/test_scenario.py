"""Scenario validation: one test per kind of bad input, each checking the key path in the message."""

from pathlib import Path

import pytest

from meobench.cases import expand
from meobench.errors import ScenarioError
from meobench.scenario import load_scenario, parse_scenario

SCENARIOS = Path(__file__).resolve().parent.parent / "scenarios"
MINIMAL = "name: t\nvariants: [dense, moe-token]\n"


def error_of(text: str) -> str:
    with pytest.raises(ScenarioError) as caught:
        parse_scenario(text, source="bad.yaml")
    return str(caught.value)


@pytest.mark.parametrize("path", sorted(SCENARIOS.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_scenarios_are_valid(path):
    assert load_scenario(path).name == path.stem


def test_minimal_scenario_defaults():
    scenario = parse_scenario(MINIMAL)
    assert scenario.mode == "inference"
    assert scenario.sweep.num_experts == [8]
    assert scenario.measure.min_repeats == 5


def test_scalar_sweep_value_becomes_list():
    scenario = parse_scenario(MINIMAL + "sweep:\n  batch_size: 4\n")
    assert scenario.sweep.batch_size == [4]


def test_yaml_syntax_error_has_line_and_column():
    message = error_of("name: t\nvariants: [dense\n")
    assert message.startswith("bad.yaml:3:1: YAML syntax error")


def test_unknown_key_suggests_nearest():
    message = error_of(MINIMAL + "sweep:\n  num_expert: [4]\n")
    assert "line 4, sweep.num_expert: unknown key (did you mean 'num_experts'?)" in message


def test_unknown_top_level_key():
    message = error_of(MINIMAL + "mesure: {warmup: 1}\n")
    assert "line 3, mesure: unknown key (did you mean 'measure'?)" in message


def test_missing_required_key():
    assert "line 1, variants: required key is missing" in error_of("name: t\n")


def test_negative_batch_size():
    message = error_of(MINIMAL + "sweep:\n  batch_size: [8, -1]\n")
    assert "line 4, sweep.batch_size: contains -1, but every value must be a positive integer" in message


def test_wrong_type():
    message = error_of(MINIMAL + "sweep:\n  seq_len: [long]\n")
    assert "sweep.seq_len[0]" in message
    assert "'long'" in message


def test_top_k_larger_than_every_num_experts():
    message = error_of(MINIMAL + "sweep: {num_experts: [2, 4], top_k: [8]}\n")
    assert "sweep.top_k: every top_k [8] is larger than every num_experts [2, 4]" in message


def test_d_model_not_divisible_by_reduction():
    text = "name: t\nvariants: [meo-token]\nsweep:\n  d_model: [128, 100]\n"
    message = error_of(text)
    assert "line 4, sweep.d_model[1]: d_model 100 is not divisible by layer.token_attention_reduction=64" in message


def test_empty_sweep_list():
    message = error_of(MINIMAL + "sweep:\n  top_k: []\n")
    assert "sweep.top_k: is an empty list, so the sweep would have no cases" in message


def test_unknown_variant_lists_valid_ones():
    message = error_of("name: t\nvariants: [meo-seq]\n")
    assert "variants: contains unknown variant 'meo-seq' (did you mean 'meo-sequence'?)" in message
    assert "valid variants: dense, moe-token" in message


def test_strategy_that_fits_no_variant():
    message = error_of(MINIMAL + "sweep:\n  strategy: [gemm]\n")
    assert "sweep.strategy[0]: strategy 'gemm' applies to none of the variants dense, moe-token" in message


def test_unknown_dtype_lists_choices():
    message = error_of(MINIMAL + "sweep:\n  dtype: float8\n")
    assert "sweep.dtype[0]" in message
    assert "'float32', 'float64', 'bfloat16' or 'float16'" in message


def test_unknown_device():
    message = error_of(MINIMAL + "sweep:\n  device: [tpu]\n")
    assert "sweep.device: contains 'tpu', which is not a device" in message


def test_unknown_mode():
    assert "mode" in error_of(MINIMAL + "mode: serve\n")


def test_min_repeats_above_max():
    message = error_of(MINIMAL + "measure: {min_repeats: 9, max_repeats: 3}\n")
    assert "measure: min_repeats=9 is larger than max_repeats=3" in message


def test_python_tag_is_rejected():
    message = error_of("name: t\nvariants: !!python/object/apply:os.system ['true']\n")
    assert message.startswith("bad.yaml:2:11: YAML tag rejected")
    assert "python/object/apply:os.system" in message


def test_document_that_is_not_a_mapping():
    assert "must be a mapping" in error_of("- dense\n- moe-token\n")
    assert "the scenario is empty" in error_of("")


def test_missing_file(tmp_path):
    with pytest.raises(ScenarioError, match="scenario file not found"):
        load_scenario(tmp_path / "nope.yaml")


def test_folder_in_place_of_file(tmp_path):
    with pytest.raises(ScenarioError, match="is a folder, not a scenario file; pass one YAML file"):
        load_scenario(tmp_path)


def test_expand_counts_and_order():
    text = (
        "name: t\nvariants: [dense, moe-token, meo-sequence]\n"
        "sweep: {num_experts: [4, 8], top_k: [1, 2], batch_size: 2, strategy: [loop, dense, gemm], device: cpu}\n"
    )
    cases = expand(parse_scenario(text))
    # 2 x 2 groups; per group: dense (1) + moe-token (loop, dense) + meo-sequence (gemm) = 4 cases
    assert len(cases) == 16
    assert [c.variant for c in cases[:4]] == ["dense", "moe-token", "moe-token", "meo-sequence"]
    assert [c.strategy for c in cases[:4]] == ["none", "loop", "dense", "gemm"]
    assert len({c.case_id for c in cases}) == 16


def test_expand_uses_default_strategy():
    cases = expand(parse_scenario(MINIMAL + "sweep: {device: cpu}\n"))
    assert [(c.variant, c.strategy) for c in cases] == [("dense", "none"), ("moe-token", "loop")]


def test_device_override_resolves_auto():
    cases = expand(parse_scenario(MINIMAL + "sweep: {device: [cuda]}\n"), device="cpu")
    assert {c.group.device for c in cases} == {"cpu"}


def test_empty_strategy_list_means_defaults():
    scenario = parse_scenario(MINIMAL + "sweep:\n  strategy: []\n  device: cpu\n")
    assert [(c.variant, c.strategy) for c in expand(scenario)] == [("dense", "none"), ("moe-token", "loop")]
