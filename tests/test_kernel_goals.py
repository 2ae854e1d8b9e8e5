import pandas as pd
import pytest

from meobench.errors import MeobenchError
from meobench.kernel_goals import analytic_flop_ratio, check_kernel_goals

GROUP = dict(num_experts=16, batch_size=8, seq_len=128, d_model=768, d_ff=3072, expert_kind="linear",
             dtype="float32", device="cpu")  # fmt: skip


def rows(top_k, latencies_ms):
    return [
        dict(GROUP, top_k=top_k, variant=variant, strategy=strategy, latency_ms_median=ms, status="ok", error="")
        for (variant, strategy), ms in latencies_ms.items()
    ]


def by_goal(checks):
    return {check.goal: check for check in checks}


def test_analytic_flop_ratio():
    # k*L / (k + L) = 4 * 128 / 132 = 3.8788
    assert analytic_flop_ratio(4, 128) == pytest.approx(512 / 132)


def test_goals_on_hand_made_group():
    latencies = {
        ("dense", "none"): 20.0,
        ("moe-token", "grouped"): 90.0,
        ("moe-token", "loop"): 100.0,
        ("moe-sequence", "grouped"): 100.0,
        ("meo-sequence", "auto"): 24.0,
        ("meo-sequence", "gemm"): 40.0,
    }
    checks = by_goal(check_kernel_goals(pd.DataFrame(rows(4, latencies))))
    meo = checks["MEO-sequence / dense"]
    assert meo.measured == pytest.approx(1.2)  # 24 / 20
    assert meo.passed
    speedup = checks["MEO speedup / FLOP ratio"]
    # fastest MoE 90 ms / 24 ms = 3.75x; 3.75 / (512 / 132) = 0.9668
    assert speedup.measured == pytest.approx(3.75 / (512 / 132))
    assert speedup.passed
    token = checks["moe-token grouped / (k x dense)"]
    assert token.measured == pytest.approx(90 / 80)  # 4 x 20 ms = 80 ms
    assert token.passed
    sequence = checks["moe-sequence grouped / (k x dense)"]
    assert sequence.measured == pytest.approx(1.25)  # 100 / 80
    assert not sequence.passed


def test_speedup_goal_skipped_for_top_k_one():
    latencies = {("dense", "none"): 20.0, ("moe-token", "grouped"): 22.0, ("moe-sequence", "grouped"): 22.0,
                 ("meo-sequence", "auto"): 30.0}  # fmt: skip
    checks = by_goal(check_kernel_goals(pd.DataFrame(rows(1, latencies))))
    assert "MEO speedup / FLOP ratio" not in checks
    assert not checks["MEO-sequence / dense"].passed  # 30 / 20 = 1.5 > 1.25


def test_missing_row_names_it():
    latencies = {("dense", "none"): 20.0, ("meo-sequence", "gemm"): 30.0}
    with pytest.raises(MeobenchError, match="no meo-sequence row with strategy 'auto' for top_k=2"):
        check_kernel_goals(pd.DataFrame(rows(2, latencies)))


def test_failed_row_is_reported():
    frame = pd.DataFrame(rows(2, {("dense", "none"): 20.0, ("meo-sequence", "auto"): 30.0}))
    frame.loc[frame["variant"] == "dense", ["status", "error"]] = ["failed", "RuntimeError: boom"]
    with pytest.raises(MeobenchError, match="dense none for top_k=2 has status 'failed'"):
        check_kernel_goals(frame)
