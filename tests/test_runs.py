import json

import pytest

from meobench.errors import MeobenchError
from meobench.rundir import SCHEMA_VERSION
from meobench.runs import defining_scenario, load_run
from tests.result_files import make_case, make_document, write_run


def _version_1_document() -> dict:
    """A results.json as schema version 1 wrote it: device names only, FLOPs only as gflops."""
    case = make_case()
    del case["flops"]
    document = make_document([case], schema_version=1)
    document["environment"]["devices"] = {"cpu": "Test CPU 9000"}
    return document


def test_load_current_schema(tmp_path):
    run = load_run(write_run(tmp_path / "run", make_document([make_case()])))
    assert run.schema_version == SCHEMA_VERSION
    assert run.devices["cpu"]["name"] == "Test CPU 9000"
    assert run.label == "run"


def test_load_results_json_path(tmp_path):
    folder = write_run(tmp_path / "run", make_document([make_case()]))
    assert load_run(folder / "results.json").path == folder / "results.json"


def test_version_1_is_upgraded(tmp_path):
    run = load_run(write_run(tmp_path / "old", _version_1_document()))
    assert run.schema_version == 1
    assert run.devices == {"cpu": {"name": "Test CPU 9000"}}
    # gflops 4.831838208 * 1e9 rounds back to the integer count.
    assert run.cases[0]["flops"] == 4_831_838_208


def test_version_1_gates_against_version_2(tmp_path):
    from meobench.gate import GateSettings, gate_runs

    old = load_run(write_run(tmp_path / "old", _version_1_document()))
    new = load_run(write_run(tmp_path / "new", make_document([make_case()])))
    assert gate_runs(old, new, GateSettings()).exit_status == 0


def test_newer_schema_fails_clearly(tmp_path):
    folder = write_run(tmp_path / "new", make_document([make_case()], schema_version=SCHEMA_VERSION + 1))
    with pytest.raises(MeobenchError, match=f"schema_version {SCHEMA_VERSION + 1} is newer .* upgrade meobench"):
        load_run(folder)


def test_missing_schema_version_fails_clearly(tmp_path):
    document = make_document([make_case()])
    del document["schema_version"]
    with pytest.raises(MeobenchError, match="schema_version is missing"):
        load_run(write_run(tmp_path / "none", document))


def test_unsupported_old_schema_fails_clearly(tmp_path):
    with pytest.raises(MeobenchError, match="schema_version 0 is no longer supported"):
        load_run(write_run(tmp_path / "zero", make_document([make_case()], schema_version=0)))


def test_missing_run_fails_clearly(tmp_path):
    with pytest.raises(MeobenchError, match="results.json not found"):
        load_run(tmp_path / "absent")


def test_invalid_json_names_line(tmp_path):
    (tmp_path / "results.json").write_text('{\n  "cases": [\n')
    with pytest.raises(MeobenchError, match="invalid JSON at line 3"):
        load_run(tmp_path)


def test_duplicate_case_rejected(tmp_path):
    run = load_run(write_run(tmp_path / "run", make_document([make_case(), make_case()])))
    with pytest.raises(MeobenchError, match="occurs twice"):
        run.cases_by_key()


def test_written_run_loads(tmp_path):
    """A run directory written by RunDirectory reads back with its exact FLOP count."""
    from meobench.cases import Case, CaseGroup
    from meobench.results import CaseResult
    from meobench.rundir import RunDirectory
    from meobench.timing import Measurement

    group = CaseGroup(4, 2, 2, 16, 64, 128, "linear", "float32", "cpu")
    result = CaseResult("s", Case(group, "dense", "none"), "inference", flops=123_456_789_012,
                        measurement=Measurement((0.001, 0.002), "max_repeats"))  # fmt: skip
    RunDirectory(tmp_path).write_final([result], {"name": "s"}, {"devices": {"cpu": {"name": "x"}}}, complete=True)
    run = load_run(tmp_path)
    assert run.cases[0]["flops"] == 123_456_789_012
    assert run.cases[0]["latency_samples_s"] == [0.001, 0.002]
    assert json.loads((tmp_path / "results.json").read_text())["schema_version"] == SCHEMA_VERSION


def test_folder_of_rounds_is_pooled(tmp_path):
    write_run(tmp_path / "base" / "round-1", make_document([make_case(samples_ms=(1, 2, 3))]))
    write_run(tmp_path / "base" / "round-2", make_document([make_case(samples_ms=(4, 5))]))
    run = load_run(tmp_path / "base")
    assert run.rounds == 2
    assert run.label == "base"
    [case] = run.cases
    assert case["latency_samples_s"] == [0.001, 0.002, 0.003, 0.004, 0.005]
    assert case["repeats"] == 5
    assert case["latency_ms_median"] == 3.0


def test_pooled_rounds_gate(tmp_path):
    from meobench.gate import GateSettings, gate_runs

    for side, rounds in (("base", [(1, 2, 3), (4, 5)]), ("head", [(6, 7, 8), (9, 10)])):
        for index, samples in enumerate(rounds):
            write_run(tmp_path / side / f"round-{index}", make_document([make_case(samples_ms=samples)]))
    report = gate_runs(load_run(tmp_path / "base"), load_run(tmp_path / "head"), GateSettings())
    [latency] = [check for check in report.checks if check.metric == "latency"]
    # Pooled: 1..5 ms against 6..10 ms, p = 2 / 252 as in test_gate.
    assert latency.outcome == "regression"
    assert latency.p_value == pytest.approx(2 / 252)


def test_rounds_with_other_flops_rejected(tmp_path):
    write_run(tmp_path / "base" / "round-1", make_document([make_case()]))
    write_run(tmp_path / "base" / "round-2", make_document([make_case(flops=1)]))
    with pytest.raises(MeobenchError, match="has flops 4831838208 in one round and 1"):
        load_run(tmp_path / "base")


def test_rounds_on_other_hardware_rejected(tmp_path):
    from tests.result_files import CPU

    write_run(tmp_path / "base" / "round-1", make_document([make_case()]))
    write_run(tmp_path / "base" / "round-2", make_document([make_case()], {**CPU, "name": "Other"}))
    with pytest.raises(MeobenchError, match="ran on other hardware"):
        load_run(tmp_path / "base")


def test_older_run_without_compile_and_threads_stays_comparable():
    older = {"name": "s", "variants": ["dense"], "mode": "inference"}
    current = {**older, "compile": False, "threads": None, "measure": {"profile_active": 3}}
    assert defining_scenario(older) == defining_scenario(current)
    assert defining_scenario(older) != defining_scenario({**current, "threads": 1})
