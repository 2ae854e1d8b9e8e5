"""Bad input: one test per kind of bad input, each through the CLI.

Every case checks exit status 2, that the message names the key, option or position
at fault, and that no traceback is printed.
"""

import os
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from meobench.cli import app

runner = CliRunner()
MINIMAL = "name: t\nvariants: [dense, moe-token]\n"
TINY = "sweep: {num_experts: 2, top_k: 1, batch_size: 1, seq_len: 4, d_model: 8, d_ff: 8, device: cpu}\n"

# (test id, scenario text, expected text in the message)
BAD_SCENARIOS = [
    ("yaml-syntax", "name: t\nvariants: [dense\n", "bad.yaml:3:1: YAML syntax error"),
    ("python-tag", "name: t\nvariants: !!python/object/apply:os.system ['true']\n", "bad.yaml:2:11: YAML tag rejected"),
    ("python-name", "name: !!python/name:os.system\nvariants: [dense]\n", "bad.yaml:1:7: YAML tag rejected"),
    (
        "unknown-key",
        MINIMAL + "sweep:\n  batchsize: [1]\n",
        "sweep.batchsize: unknown key (did you mean 'batch_size'?)",
    ),
    ("unknown-top-key", MINIMAL + "mesure: {warmup: 1}\n", "mesure: unknown key (did you mean 'measure'?)"),
    (
        "wrong-type",
        MINIMAL + "sweep:\n  seq_len: [long]\n",
        "line 4, sweep.seq_len[0]: Input should be a valid integer",
    ),
    ("negative-batch", MINIMAL + "sweep:\n  batch_size: [-8]\n", "sweep.batch_size: contains -8, but every value"),
    ("top-k-above-experts", MINIMAL + "sweep: {num_experts: 2, top_k: 4}\n", "sweep.top_k: every top_k [4] is larger"),
    (
        "d-model-not-divisible",
        "name: t\nvariants: [meo-token]\nsweep: {d_model: 100}\n",
        "sweep.d_model[0]: d_model 100 is not divisible by layer.token_attention_reduction=64",
    ),
    ("empty-sweep-list", MINIMAL + "sweep:\n  num_experts: []\n", "sweep.num_experts: is an empty list"),
    ("empty-variants", "name: t\nvariants: []\n", "variants: is an empty list; name at least one variant"),
    ("empty-document", "", "the scenario is empty"),
    ("unknown-variant", "name: t\nvariants: [moe-tokens]\n", "variants: contains unknown variant 'moe-tokens'"),
    ("unknown-strategy", MINIMAL + "sweep: {strategy: [loops]}\n", "sweep.strategy[0]: strategy 'loops'"),
    ("unknown-device", MINIMAL + "sweep: {device: tpu}\n", "sweep.device: contains 'tpu', which is not a device"),
    ("unknown-dtype", MINIMAL + "sweep: {dtype: float8}\n", "sweep.dtype[0]: Input should be 'float32'"),
    ("unknown-mode", MINIMAL + "mode: serve\n", "mode: Input should be 'inference' or 'train'"),
    (
        "bad-time-limit",
        MINIMAL + "measure: {time_limit_s: -1}\n",
        "measure.time_limit_s: Input should be greater than 0",
    ),
    ("too-deep", "[" * 5000, "nested too deeply"),
]
# What the message lists as valid choices, for the kinds whose fix is to pick one.
VALID_CHOICES = {
    "unknown-key": "valid keys here: num_experts, top_k, batch_size",
    "unknown-variant": "valid variants: dense, moe-token, moe-sequence",
    "unknown-strategy": "valid strategies for them: dense, grouped, loop",
    "unknown-device": "use auto, cpu, cuda, cuda:N or mps",
    "unknown-dtype": "'float32', 'float64', 'bfloat16' or 'float16'",
}


def invoke(*arguments):
    result = runner.invoke(app, [str(argument) for argument in arguments])
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result


@pytest.mark.parametrize(("kind", "text", "expected"), BAD_SCENARIOS, ids=[case[0] for case in BAD_SCENARIOS])
def test_bad_scenario_exits_2(tmp_path, kind, text, expected):
    scenario = tmp_path / "bad.yaml"
    scenario.write_text(text)
    for command in ("run", "validate"):
        result = invoke(command, scenario) if command == "validate" else invoke(command, scenario, "--dry-run")
        assert result.exit_code == 2, result.output
        # The message names bad.yaml with its path; compare from the file name on.
        assert expected in result.output.replace(str(scenario), "bad.yaml"), result.output
        if kind in VALID_CHOICES:
            assert VALID_CHOICES[kind] in result.output


def test_sweep_above_max_cases(tmp_path):
    scenario = tmp_path / "big.yaml"
    # 10 x 10 x 10 groups x 2 variants = 2000 cases.
    scenario.write_text(
        MINIMAL + "sweep: {num_experts: [1,2,3,4,5,6,7,8,9,10], batch_size: [1,2,3,4,5,6,7,8,9,10], "
        "seq_len: [1,2,3,4,5,6,7,8,9,10], top_k: 1}\n"
    )
    result = invoke("run", scenario, "--max-cases", "1999", "--dry-run")
    assert result.exit_code == 2
    assert "the sweep has 2000 cases, more than --max-cases 1999" in result.output


def test_default_max_cases_is_5000(tmp_path):
    scenario = tmp_path / "big.yaml"
    # 20 x 20 x 13 groups x 1 variant = 5200 cases.
    values = ", ".join(str(value) for value in range(1, 21))
    scenario.write_text(
        f"name: t\nvariants: [dense]\nsweep: {{batch_size: [{values}], seq_len: [{values}], "
        "d_ff: [1,2,3,4,5,6,7,8,9,10,11,12,13]}\n"
    )
    result = invoke("run", scenario)
    assert result.exit_code == 2
    assert "the sweep has 5200 cases, more than --max-cases 5000" in result.output


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_absent_device_with_strict(tmp_path):
    scenario = tmp_path / "s.yaml"
    scenario.write_text(MINIMAL + TINY.replace("device: cpu", "device: [cpu, cuda]"))
    result = invoke("run", scenario, "--strict", "--out", tmp_path / "out")
    assert result.exit_code == 2
    assert "sweep.device: device cuda is not available" in result.output
    assert "drop --strict to skip its cases" in result.output
    assert not (tmp_path / "out").exists()

    override = invoke("run", scenario, "--strict", "--device", "cuda:1", "--dry-run")
    assert override.exit_code == 2
    assert "--device cuda:1: device cuda:1 is not available" in override.output
    assert "drop --strict" not in override.output


def test_output_directory_not_a_run(tmp_path):
    scenario = tmp_path / "s.yaml"
    scenario.write_text(MINIMAL + TINY)
    out = tmp_path / "photos"
    out.mkdir()
    (out / "holiday.jpg").write_bytes(b"\xff\xd8")
    result = invoke("run", scenario, "--out", out)
    assert result.exit_code == 2
    assert f"--out {out}: the directory is not empty and is not a meobench run directory" in result.output
    assert sorted(path.name for path in out.iterdir()) == ["holiday.jpg"]


def test_output_directory_is_a_file(tmp_path):
    scenario = tmp_path / "s.yaml"
    scenario.write_text(MINIMAL + TINY)
    (tmp_path / "file").write_text("")
    result = invoke("run", scenario, "--out", tmp_path / "file")
    assert result.exit_code == 2
    assert "exists and is not a directory" in result.output
    below = invoke("run", scenario, "--out", tmp_path / "file" / "run")
    assert below.exit_code == 2
    assert "cannot create the directory" in below.output


def test_output_directory_already_a_run(tmp_path):
    scenario = tmp_path / "s.yaml"
    scenario.write_text(MINIMAL + TINY)
    out = tmp_path / "run"
    out.mkdir()
    (out / "results.jsonl").write_text("")
    result = invoke("run", scenario, "--out", out)
    assert result.exit_code == 2
    assert f"--out {out}: already contains a meobench run; continue it with --resume {out}" in result.output


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root can write to any directory")
def test_output_directory_not_writable(tmp_path):
    scenario = tmp_path / "s.yaml"
    scenario.write_text(MINIMAL + TINY)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        result = invoke("run", scenario, "--out", locked)
    finally:
        locked.chmod(0o700)
    assert result.exit_code == 2
    assert f"--out {locked}: the directory is not writable" in result.output


def test_output_directory_not_writable_as_root(tmp_path, monkeypatch):
    """Root ignores permission bits, so CI (run as root) checks the rejection through a failing probe file."""

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("meobench.rundir.tempfile.mkstemp", refuse)
    scenario = tmp_path / "s.yaml"
    scenario.write_text(MINIMAL + TINY)
    result = invoke("run", scenario, "--out", tmp_path / "out")
    assert result.exit_code == 2
    assert "the directory is not writable (Permission denied)" in result.output


def test_resume_directory_not_a_run(tmp_path):
    scenario = tmp_path / "s.yaml"
    scenario.write_text(MINIMAL + TINY)
    result = invoke("run", scenario, "--resume", tmp_path)
    assert result.exit_code == 2
    assert f"--resume {tmp_path}: not a meobench run directory" in result.output


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (["--time-limit", "0"], "--time-limit 0: the limit must be a positive number of seconds"),
        (["--time-limit", "nan"], "--time-limit nan: the limit must be a positive number of seconds"),
        (["--retry-failed"], "--retry-failed needs --resume DIR"),
        (["--resume", "a", "--out", "b"], "--out and --resume were both given"),
        (["--device", "gpu0"], "--device 'gpu0' is not a device"),
        (["--max-cases", "0"], "--max-cases"),
    ],
    ids=["time-limit-zero", "time-limit-nan", "retry-without-resume", "resume-and-out", "bad-device", "max-cases-0"],
)
def test_bad_option_exits_2(tmp_path, options, expected):
    scenario = tmp_path / "s.yaml"
    scenario.write_text(MINIMAL + TINY)
    result = invoke("run", scenario, *options)
    assert result.exit_code == 2
    assert expected in result.output


def test_missing_scenario_file(tmp_path):
    result = invoke("run", tmp_path / "missing.yaml")
    assert result.exit_code == 2
    assert "missing.yaml: scenario file not found" in result.output


def test_loader_uses_safe_load_only():
    """Scenario files are data: no full or unsafe YAML loader and no remote code anywhere in meobench."""
    package = Path(__file__).resolve().parent.parent / "meobench"
    source = "\n".join(path.read_text() for path in package.rglob("*.py"))
    for forbidden in (
        "yaml.load(",
        "yaml.unsafe_load",
        "yaml.full_load",
        "Loader=yaml.Loader",
        "UnsafeLoader",
        "trust_remote_code=True",
        "importlib.import_module",
        "__import__(",
    ):
        assert forbidden not in source, forbidden
