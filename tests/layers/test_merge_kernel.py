"""meobench::merge_selected: the compiled CPU kernel and the torch fallback against a float64 reference."""

from __future__ import annotations

import pytest
import torch

from meobench.layers import merge_kernel
from meobench.layers.merge_kernel import _compile, kernel_unavailable_reason, merge_selected, merge_with_torch
from meobench.shape_only import ShapeOnlyMode

needs_kernel = pytest.mark.skipif(kernel_unavailable_reason() is not None, reason=f"{kernel_unavailable_reason()}")


def reference(stack: torch.Tensor, indices: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
    """Sum gates[b, k] * stack[indices[b, k]] one term at a time, in float64."""
    out = torch.zeros(indices.shape[0], stack.shape[1], dtype=torch.float64)
    for b in range(indices.shape[0]):
        for k in range(indices.shape[1]):
            out[b] += gates[b, k].double() * stack[indices[b, k]].double()
    return out


def routing(batch: int, top_k: int, num_experts: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    indices = torch.stack([torch.randperm(num_experts)[:top_k] for _ in range(batch)])
    return indices, torch.softmax(torch.randn(batch, top_k, dtype=dtype), dim=-1)


@needs_kernel
@pytest.mark.parametrize("dtype, tolerance", [(torch.float32, 1e-6), (torch.float64, 1e-14)])
@pytest.mark.parametrize("batch, top_k", [(1, 1), (3, 2), (4, 3), (5, 4), (2, 5), (3, 6)])
def test_kernel_matches_float64_reference(dtype, tolerance, batch, top_k):
    # A tile of rows 3..10 of a [6, 12, 700] stack: rows 8,400 elements apart, N = 7 * 700 = 4,900,
    # one full 4,096-element chunk and a ragged one of 804.
    weight = torch.randn(6, 12, 700, dtype=dtype)
    stack = weight[:, 3:10].flatten(1)
    indices, gates = routing(batch, top_k, 6, dtype)
    with torch.no_grad():
        merged = merge_selected(stack, indices, gates)
    expected = reference(stack, indices, gates)
    assert merged.dtype == dtype
    assert merged.shape == (batch, 4_900)
    assert (merged.double() - expected).abs().max().item() <= tolerance * expected.abs().max().item()


def test_fallback_matches_reference(monkeypatch):
    monkeypatch.setattr(merge_kernel, "compiled_library", lambda: None)
    stack = torch.randn(5, 300)
    indices, gates = routing(4, 3, 5, torch.float32)
    with torch.no_grad():
        merged = merge_selected(stack, indices, gates)
    torch.testing.assert_close(merged.double(), reference(stack, indices, gates), rtol=1e-6, atol=1e-6)


def test_gradient_path_matches_reference():
    stack = torch.randn(5, 300, requires_grad=True)
    indices, gates = routing(4, 3, 5, torch.float32)
    merged = merge_selected(stack, indices, gates)
    merged.sum().backward()
    torch.testing.assert_close(
        merged.detach().double(), reference(stack.detach(), indices, gates), rtol=1e-6, atol=1e-6
    )
    # d(sum)/d stack[e] = sum of the gates that selected expert e
    expected_grad = torch.zeros(5).index_add_(0, indices.flatten(), gates.flatten())
    torch.testing.assert_close(stack.grad[:, 0], expected_grad)


def test_bfloat16_runs_torch_ops():
    stack = torch.randn(4, 64, dtype=torch.bfloat16)
    indices, gates = routing(2, 2, 4, torch.bfloat16)
    with torch.no_grad():
        merged = merge_selected(stack, indices, gates)
    torch.testing.assert_close(merged, merge_with_torch(stack, indices, gates))


def test_shape_only_mode_gives_the_shape():
    stack = torch.randn(4, 96)
    indices, gates = routing(3, 2, 4, torch.float32)
    with ShapeOnlyMode(), torch.no_grad():
        merged = merge_selected(stack, indices, gates)
    assert merged.shape == (3, 96)


def test_compile_failure_is_reported(tmp_path):
    # `false` exits with status 1 whatever its arguments.
    reason = _compile(["false"], tmp_path / "merge.so")
    assert reason is not None
    assert "failed with exit status 1" in reason
    assert not (tmp_path / "merge.so").exists()


def test_missing_compiler_is_reported(tmp_path):
    reason = _compile(["no-such-compiler-meobench"], tmp_path / "merge.so")
    assert reason is not None
    assert reason.startswith("no-such-compiler-meobench failed to run")
