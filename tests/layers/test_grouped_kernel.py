"""meobench::grouped_linear: the compiled CPU kernel and the torch fallback against a float64 reference."""

from __future__ import annotations

import pytest
import torch

from meobench.layers import grouped_kernel
from meobench.layers.compiled import _compile, kernel_unavailable_reason
from meobench.layers.grouped_kernel import grouped_linear, grouped_linear_macs, grouped_linear_with_torch
from meobench.shape_only import ShapeOnlyMode

needs_kernel = pytest.mark.skipif(kernel_unavailable_reason() is not None, reason=f"{kernel_unavailable_reason()}")


def reference(x, weight, bias, offsets, experts, gates, x_rows=None, row_scale=None, out_rows=None, out_count=None):
    """The op's definition, one row and one expert at a time, in float64."""
    rows = x.double() if x_rows is None else x.double()[x_rows]
    bounds = offsets.tolist()
    y = torch.zeros(rows.shape[0], weight.shape[1], dtype=torch.float64)
    for group in range(experts.shape[0]):
        for k in range(experts.shape[1]):
            gate = 1.0 if gates is None else gates[group, k].item()
            expert = experts[group, k]
            for r in range(bounds[group], bounds[group + 1]):
                term = weight[expert].double() @ rows[r]
                if bias is not None:
                    term += bias[expert].double()
                y[r] += gate * term
    if row_scale is not None:
        y *= row_scale.double().unsqueeze(-1)
    if out_rows is None:
        return y
    return torch.zeros(out_count, y.shape[1], dtype=torch.float64).index_add_(0, out_rows, y)


def meo_case(group_sizes, top_k, d_in=37, d_out=29, num_experts=5, bias=True):
    """Groups of the given sizes, each with top_k distinct experts and softmax gates."""
    x = torch.randn(sum(group_sizes), d_in)
    weight = torch.randn(num_experts, d_out, d_in)
    biases = torch.randn(num_experts, d_out) if bias else None
    offsets = torch.tensor([0, *group_sizes]).cumsum(0)
    experts = torch.stack([torch.randperm(num_experts)[:top_k] for _ in group_sizes])
    gates = torch.softmax(torch.randn(len(group_sizes), top_k), dim=-1)
    return x, weight, biases, offsets, experts, gates


def moe_case(tokens, top_k, num_experts=4, d_in=37, d_out=29):
    """Token-slots sorted by expert, as grouped MoE passes them."""
    x = torch.randn(tokens, d_in)
    weight, bias = torch.randn(num_experts, d_out, d_in), torch.randn(num_experts, d_out)
    indices = torch.stack([torch.randperm(num_experts)[:top_k] for _ in range(tokens)])
    order = torch.argsort(indices.reshape(-1), stable=True)
    counts = torch.bincount(indices.reshape(-1), minlength=num_experts)
    offsets = torch.cat([torch.zeros(1, dtype=torch.int64), counts.cumsum(0)])
    experts = torch.arange(num_experts).unsqueeze(1)
    token_of_slot = order // top_k
    scale = torch.rand(tokens * top_k)
    return (x, weight, bias, offsets, experts, None), dict(
        x_rows=token_of_slot, row_scale=scale, out_rows=token_of_slot, out_count=tokens
    )


def assert_matches(result, expected, tolerance=2e-6):
    assert result.shape == expected.shape
    error = (result.double() - expected).abs().max().item()
    assert error <= tolerance * expected.abs().max().item()


# Group sizes cover an empty group, panels of 8, 16 and 32 columns, and each remainder after them.
@needs_kernel
@pytest.mark.parametrize("top_k", [1, 2, 3, 4, 5, 8])
@pytest.mark.parametrize("group_sizes", [[1], [7, 0, 9], [16, 17, 33], [64, 5]])
def test_kernel_merges_like_the_reference(group_sizes, top_k):
    args = meo_case(group_sizes, top_k, num_experts=8)
    with torch.no_grad():
        assert_matches(grouped_linear(*args), reference(*args))


@needs_kernel
@pytest.mark.parametrize("d_out", [1, 11, 12, 13, 50])
def test_kernel_handles_partial_row_tiles(d_out):
    # Tiles hold 12 rows of d_out with AVX-512 and 6 without: d_out = 13 leaves a tile of one row.
    args = meo_case([5, 19], top_k=2, d_in=16, d_out=d_out, bias=False)
    with torch.no_grad():
        assert_matches(grouped_linear(*args), reference(*args))


@needs_kernel
@pytest.mark.parametrize("top_k", [1, 2, 3])
def test_kernel_gathers_scales_and_sums_token_slots(top_k):
    args, rows = moe_case(tokens=23, top_k=top_k)
    with torch.no_grad():
        assert_matches(grouped_linear(*args, **rows), reference(*args, **rows))


@needs_kernel
def test_strided_routing_tensors_still_use_the_kernel(monkeypatch):
    # torch.topk returns strided indices; the op must copy them rather than fall back to torch ops.
    chosen = []
    kernel_for = grouped_kernel._kernel_for
    monkeypatch.setattr(grouped_kernel, "_kernel_for", lambda *args: chosen.append(kernel_for(*args)) or chosen[-1])
    x, weight, bias, offsets, experts, gates = meo_case([3, 4], top_k=2)
    strided_experts = torch.stack([experts[:, 1], experts[:, 0]]).t().flip(1)
    assert not strided_experts.is_contiguous()
    with torch.no_grad():
        out = grouped_linear(x, weight, bias, offsets, strided_experts, gates)
    assert chosen[0] is not None
    assert_matches(out, reference(x, weight, bias, offsets, experts, gates))


@needs_kernel
def test_output_rows_without_any_slot_are_zero():
    x = torch.ones(2, 3)
    weight, offsets, experts = torch.ones(1, 2, 3), torch.tensor([0, 2]), torch.zeros(1, 1, dtype=torch.int64)
    with torch.no_grad():
        out = grouped_linear(x, weight, None, offsets, experts, out_rows=torch.tensor([2, 2]), out_count=4)
    # Each row gives 1 + 1 + 1 = 3 per output; both rows go to output row 2, rows 0, 1 and 3 get none.
    assert out.tolist() == [[0, 0], [0, 0], [6, 6], [0, 0]]


def test_hand_worked_merge():
    # Two experts of one row each: W0 = [1, 2], W1 = [3, 4], b = [10, 20]; gates 0.25 and 0.75 merge
    # them into [2.5, 3.5] and bias 17.5, so x = [2, 1] gives 5 + 3.5 + 17.5 = 26.
    weight = torch.tensor([[[1.0, 2.0]], [[3.0, 4.0]]])
    bias = torch.tensor([[10.0], [20.0]])
    x, offsets = torch.tensor([[2.0, 1.0]]), torch.tensor([0, 1])
    experts, gates = torch.tensor([[0, 1]]), torch.tensor([[0.25, 0.75]])
    with torch.no_grad():
        assert grouped_linear(x, weight, bias, offsets, experts, gates).tolist() == [[26.0]]


def test_fallback_matches_reference(monkeypatch):
    monkeypatch.setattr(grouped_kernel, "compiled_library", lambda: None)
    args = meo_case([3, 4], top_k=2)
    moe_args, rows = moe_case(tokens=9, top_k=2)
    with torch.no_grad():
        assert_matches(grouped_linear(*args), reference(*args))
        assert_matches(grouped_linear(*moe_args, **rows), reference(*moe_args, **rows))


def test_float64_runs_torch_ops():
    args = [t.double() if t is not None and t.is_floating_point() else t for t in meo_case([3, 4], top_k=2)]
    with torch.no_grad():
        assert_matches(grouped_linear(*args), reference(*args), tolerance=1e-12)


def test_gradient_path_matches_reference():
    x, weight, bias, offsets, experts, gates = meo_case([3, 4], top_k=2)
    weight.requires_grad_(True)
    y = grouped_linear(x, weight, bias, offsets, experts, gates)
    assert y.grad_fn is not None
    assert_matches(y.detach(), reference(x, weight.detach(), bias, offsets, experts, gates))
    y.sum().backward()
    assert weight.grad is not None


def test_torch_path_equals_the_op_on_ungated_segments():
    args, rows = moe_case(tokens=12, top_k=1)
    with torch.no_grad():
        torch.testing.assert_close(grouped_linear(*args, **rows), grouped_linear_with_torch(*args, **rows))


def test_shape_only_mode_gives_the_shape():
    args, rows = moe_case(tokens=6, top_k=2)
    with ShapeOnlyMode(), torch.no_grad():
        out = grouped_linear(*args, **rows)
    assert out.shape == (6, 29)


def test_macs_formula():
    # R = 10 rows, F = 3, D = 4: products 10 * 3 * 4 = 120. Gated: G = 2 groups, K = 2 merge
    # 2 * 2 * (12 + 3) = 60 with biases, 2 * 2 * 12 = 48 without. Ungated groups merge nothing.
    assert grouped_linear_macs([10, 4], [5, 3, 4], [5, 3], [2, 2], [2, 2], None) == 120 + 60
    assert grouped_linear_macs([10, 4], [5, 3, 4], None, [2, 2], [2, 2], None) == 120 + 48
    assert grouped_linear_macs([7, 4], [5, 3, 4], [5, 3], [5, 1], None, [10]) == 120


def test_compile_failure_is_reported(tmp_path):
    # `false` exits with status 1 whatever its arguments.
    reason = _compile(["false"], [], tmp_path / "kernels.so")
    assert reason is not None
    assert "failed with exit status 1" in reason
    assert not (tmp_path / "kernels.so").exists()


def test_missing_compiler_is_reported(tmp_path):
    reason = _compile(["no-such-compiler-meobench"], [], tmp_path / "kernels.so")
    assert reason is not None
    assert reason.startswith("no-such-compiler-meobench failed to run")


@needs_kernel
@pytest.mark.parametrize(
    "change, message",
    [
        (dict(offsets=torch.tensor([0, 3, 8])), r"offsets must be \[0, \.\.\., 7\]"),
        (
            dict(offsets=torch.tensor([0, 5, 3, 7]), experts=torch.zeros(3, 2, dtype=torch.int64), gates=torch.ones(3, 2)),
            "offsets must not decrease",
        ),
        (dict(experts=torch.tensor([[0, 1], [2, 5]])), r"experts must lie in \[0, 5\)"),
        (dict(x_rows=torch.tensor([0, 1, 2, 3, 4, 5, 9])), r"x_rows must lie in \[0, 7\)"),
        (dict(out_rows=torch.tensor([0, 1, 2, 3, 4, 5, 6]), out_count=6), r"out_rows must lie in \[0, 6\)"),
        (dict(row_scale=torch.ones(3)), "row_scale must have one entry per row, 7"),
    ],
)
def test_kernel_rejects_indices_out_of_range(change, message):
    x, weight, bias, offsets, experts, gates = meo_case([3, 4], top_k=2)
    arguments = dict(x=x, weight=weight, bias=bias, offsets=offsets, experts=experts, gates=gates)
    arguments.update(change)
    with torch.no_grad(), pytest.raises(ValueError, match=message):
        grouped_linear(**arguments)
