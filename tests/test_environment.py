import hashlib

from meobench.environment import collect_environment, device_fingerprint, device_identity, fingerprint_digest


def test_cpu_fingerprint_uses_scenario_threads():
    fingerprint = device_fingerprint("cpu", threads=3)
    assert fingerprint["kind"] == "cpu"
    assert fingerprint["threads"] == 3
    assert fingerprint_digest(fingerprint) != fingerprint_digest({**fingerprint, "threads": 4})


def test_identity_leaves_out_state():
    fingerprint = {"kind": "cuda", "name": "GPU", "sm_count": 132, "sm_clock_mhz": 1980, "driver_version": "570"}
    assert device_identity(fingerprint) == {"kind": "cuda", "name": "GPU", "sm_count": 132}


def test_environment_records_scenario_hash_and_timing(tmp_path):
    scenario = tmp_path / "s.yaml"
    scenario.write_text("name: s\nvariants: [dense]\n")
    environment = collect_environment(["cpu"], scenario_path=scenario, timing={"warmup": 1}, threads=3)
    assert environment["scenario_sha256"] == hashlib.sha256(b"name: s\nvariants: [dense]\n").hexdigest()
    assert environment["timing"] == {"warmup": 1}
    assert environment["torch_threads"] == 3
    assert environment["devices"]["cpu"]["threads"] == 3
    for key in ("torch_version", "cudnn_version", "triton_version", "cpu_model", "git_dirty", "memory_total_bytes"):
        assert key in environment
