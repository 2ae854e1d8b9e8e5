"""One grouped, gate-merged linear as the torch op ``meobench::grouped_linear``.

Shape legend: R rows taken from x, D input width, F output width, E experts,
G groups, K experts per group.

The R rows (x itself, or ``x[x_rows]``) are split into G consecutive groups by
``offsets`` [G + 1]. Group g applies the gate-weighted sum of its K experts of
``weight`` [E, F, D] and ``bias`` [E, F]:

    y[r] = row_scale[r] * (sum_k gates[g, k] * (weight[experts[g, k]] x_r + bias[experts[g, k]]))

then row r of the result is y[r], or, with ``out_rows``, the result has
``out_count`` rows and row out_rows[r] is the sum of every y[r] sent to it.

MEO calls it with one group per sequence and the K selected experts and gates,
so the merged weight of each sequence is built a few rows at a time and used at
once. Grouped MoE calls it with one group per expert segment, K = 1 and no
gates (the expert's weights are used as they are), the tokens gathered through
``x_rows`` and the combine folded in through ``row_scale`` and ``out_rows``.

On the CPU in float32, without a gradient, the op runs the C kernel in
csrc/grouped_linear.c (see meobench.layers.compiled). Elsewhere it runs torch
ops with the same result and FLOPs: torch._grouped_mm for ungated segments where
the build supports it, else one product per group. FlopCounterMode and fvcore
count the op by ``grouped_linear_macs``; the torch profiler cannot count a custom op.
"""

from __future__ import annotations

import ctypes

import torch
import torch.nn.functional as F

from meobench.layers.compiled import compiled_library

# Dtypes torch._grouped_mm accepts on CPU (torch 2.13.0).
GROUPED_MM_CPU_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def grouped_linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    offsets: torch.Tensor,
    experts: torch.Tensor,
    gates: torch.Tensor | None = None,
    x_rows: torch.Tensor | None = None,
    row_scale: torch.Tensor | None = None,
    out_rows: torch.Tensor | None = None,
    out_count: int | None = None,
) -> torch.Tensor:
    """Apply each group's merged expert to its rows: see the module docstring for the arguments.

    Runs the op when no gradient is needed, and differentiable torch ops otherwise.
    ``out_count`` defaults to the number of rows R.
    """
    if out_count is None:
        out_count = int(x.shape[0] if x_rows is None else x_rows.shape[0])
    arguments = (x, weight, bias, offsets, experts, gates, x_rows, row_scale, out_rows, out_count)
    differentiable = (x, weight, bias, gates, row_scale)
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in differentiable):
        return grouped_linear_with_torch(*arguments)
    return torch.ops.meobench.grouped_linear(*arguments)


@torch.library.custom_op("meobench::grouped_linear", mutates_args=())
def _grouped_linear_op(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    offsets: torch.Tensor,
    experts: torch.Tensor,
    gates: torch.Tensor | None,
    x_rows: torch.Tensor | None,
    row_scale: torch.Tensor | None,
    out_rows: torch.Tensor | None,
    out_count: int,
) -> torch.Tensor:
    # The routing tensors are small, and top-k returns strided ones: copy them to contiguous memory.
    offsets, experts, gates, x_rows, row_scale, out_rows = (
        None if t is None else t.contiguous() for t in (offsets, experts, gates, x_rows, row_scale, out_rows)
    )
    arguments = (x, weight, bias, offsets, experts, gates, x_rows, row_scale, out_rows)
    kernel = _kernel_for(*arguments)
    if kernel is None:
        return grouped_linear_with_torch(*arguments, out_count)
    _check_indices(x, weight, offsets, experts, x_rows, row_scale, out_rows, out_count)
    _, d_out, d_in = weight.shape
    accumulate = None
    if out_rows is None:
        out = x.new_empty(offsets[-1].item(), d_out)
    else:
        accumulate, uncovered = _accumulate_flags(out_rows, out_count)
        out = x.new_zeros(out_count, d_out) if uncovered else x.new_empty(out_count, d_out)
    threads = torch.get_num_threads()
    failed = kernel(
        x.data_ptr(), d_in, _pointer(x_rows), weight.data_ptr(), _pointer(bias), d_out, experts.shape[0],
        offsets.data_ptr(), experts.shape[1], experts.data_ptr(), _pointer(gates), _pointer(row_scale),
        out.data_ptr(), _pointer(out_rows), _pointer(accumulate), threads,
    )  # fmt: skip
    if failed:
        raise MemoryError(
            f"meobench::grouped_linear could not allocate its buffers for {offsets[-1].item()} rows of width "
            f"{d_in} on {threads} threads; use a smaller batch_size or seq_len."
        )
    return out


@_grouped_linear_op.register_fake
def _grouped_linear_fake(x, weight, bias, offsets, experts, gates, x_rows, row_scale, out_rows, out_count):
    if out_rows is not None:
        return x.new_empty(out_count, weight.shape[1])
    rows = x.shape[0] if x_rows is None else x_rows.shape[0]
    return x.new_empty(rows, weight.shape[1])


def grouped_linear_macs(x_shape, weight_shape, bias_shape, experts_shape, gates_shape, x_rows_shape) -> int:
    """Multiply-adds of meobench::grouped_linear: R*F*D for the products, plus G*K*(F*D + F) to merge.

    Ungated groups (grouped MoE) use their expert as it is and merge nothing. Gated
    ones (MEO) merge their K experts' weights, and their biases when there are biases.
    """
    _, d_out, d_in = weight_shape
    rows = x_shape[0] if x_rows_shape is None else x_rows_shape[0]
    macs = rows * d_out * d_in
    if gates_shape is not None:
        groups, top_k = experts_shape
        macs += groups * top_k * (d_out * d_in + (d_out if bias_shape is not None else 0))
    return macs


def grouped_linear_flops(
    x_shape, weight_shape, bias_shape, offsets_shape, experts_shape, gates_shape, x_rows_shape, *args, **kwargs
) -> int:
    """FlopCounterMode formula of meobench::grouped_linear: 2 FLOPs per multiply-add."""
    return 2 * grouped_linear_macs(x_shape, weight_shape, bias_shape, experts_shape, gates_shape, x_rows_shape)


def grouped_linear_with_torch(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    offsets: torch.Tensor,
    experts: torch.Tensor,
    gates: torch.Tensor | None,
    x_rows: torch.Tensor | None,
    row_scale: torch.Tensor | None,
    out_rows: torch.Tensor | None,
    out_count: int,
) -> torch.Tensor:
    """Compute meobench::grouped_linear with differentiable torch ops."""
    rows = x if x_rows is None else x[x_rows]  # [R, D]
    if gates is None and experts.shape[1] == 1:
        y = _ungated_segments(rows, weight, bias, offsets, experts[:, 0])
    else:
        bounds = offsets.tolist()
        pieces = []
        for group in range(experts.shape[0]):
            start, stop = bounds[group], bounds[group + 1]
            if start == stop:
                continue
            selected = experts[group]
            group_gates = torch.ones(selected.shape, dtype=x.dtype, device=x.device) if gates is None else gates[group]
            merged_weight = torch.einsum("k,kfd->fd", group_gates, weight[selected])
            merged_bias = None if bias is None else group_gates @ bias[selected]
            pieces.append(F.linear(rows[start:stop], merged_weight, merged_bias))
        y = torch.cat(pieces) if pieces else rows.new_zeros(0, weight.shape[1])
    if row_scale is not None:
        y = y * row_scale.unsqueeze(-1)
    if out_rows is None:
        return y
    return y.new_zeros(out_count, y.shape[1]).index_add_(0, out_rows, y)


def _ungated_segments(
    rows: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, offsets: torch.Tensor, experts: torch.Tensor
) -> torch.Tensor:
    """Apply expert experts[g] to rows offsets[g]:offsets[g+1]: torch._grouped_mm where it runs, else per segment."""
    bounds = offsets.tolist()
    if grouped_mm_unsupported_reason(rows, weight) is None and experts.tolist() == list(range(weight.shape[0])):
        ends = offsets[1:].to(device=rows.device, dtype=torch.int32)
        out = torch._grouped_mm(rows, weight.transpose(1, 2), offs=ends)
        if bias is not None:
            # One in-place add per segment, so no [R, F] copy of the biases is made.
            for expert in range(weight.shape[0]):
                out[bounds[expert] : bounds[expert + 1]] += bias[expert]
        return out
    pieces = []
    for group, expert in enumerate(experts.tolist()):
        start, stop = bounds[group], bounds[group + 1]
        if start < stop:
            pieces.append(F.linear(rows[start:stop], weight[expert], None if bias is None else bias[expert]))
    return torch.cat(pieces) if pieces else rows.new_zeros(0, weight.shape[1])


def grouped_mm_unsupported_reason(hidden: torch.Tensor, weight: torch.Tensor) -> str | None:
    """Why torch._grouped_mm cannot compute hidden [R, D] times weight [E, F, D] here, or None.

    Checked on torch 2.13.0 CPU: float32, bfloat16 and float16 run, float64 is
    rejected, rows must be aligned to 16 bytes, and the backward pass fails, so
    autograd uses the per-segment path. NOTE: the CUDA conditions (bfloat16,
    compute capability 9.0 or newer) follow the kernel's documented limits and
    have not been run on a GPU.
    """
    if not hasattr(torch, "_grouped_mm"):
        return f"torch {torch.__version__} has no torch._grouped_mm"
    if torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad):
        return "torch._grouped_mm has no CPU backward pass"
    row_bytes = (weight.shape[1] * weight.element_size(), weight.shape[2] * weight.element_size())
    if any(size % 16 for size in row_bytes):
        return f"torch._grouped_mm needs rows aligned to 16 bytes, got widths {tuple(weight.shape[1:])}"
    if hidden.device.type == "cpu":
        if hidden.dtype not in GROUPED_MM_CPU_DTYPES:
            return f"torch._grouped_mm on CPU does not take {hidden.dtype}"
        return None
    if hidden.device.type == "cuda":
        if hidden.dtype != torch.bfloat16:
            return f"torch._grouped_mm on CUDA is used only for bfloat16, not {hidden.dtype}"
        if torch.cuda.get_device_capability(hidden.device) < (9, 0):
            return "torch._grouped_mm needs CUDA compute capability 9.0 or newer"
        return None
    return f"torch._grouped_mm is not used on {hidden.device.type}"


def _accumulate_flags(out_rows: torch.Tensor, out_count: int) -> tuple[torch.Tensor, bool]:
    """Flag every row but the first one sent to each output row, and report whether some output row gets none.

    The kernel visits groups in order, so the first row sent to an output row writes
    it and the later ones add to it.
    """
    positions = torch.arange(out_rows.shape[0])
    first = torch.full((out_count,), out_rows.shape[0], dtype=torch.int64)
    first.scatter_reduce_(0, out_rows, positions, reduce="amin")
    uncovered = bool((first == out_rows.shape[0]).any())
    if uncovered:
        return torch.ones(out_rows.shape, dtype=torch.uint8), True
    return (first[out_rows] != positions).to(torch.uint8), False


def _check_indices(x, weight, offsets, experts, x_rows, row_scale, out_rows, out_count) -> None:
    """Raise ValueError unless every index the kernel follows stays inside its tensor.

    The kernel reads and writes through these indices without bounds checks.
    """
    rows = x.shape[0] if x_rows is None else x_rows.shape[0]
    problems = []
    if offsets.shape != (experts.shape[0] + 1,) or offsets[0] != 0 or offsets[-1] != rows:
        problems.append(f"offsets must be [0, ..., {rows}] with one more entry than the {experts.shape[0]} groups")
    elif bool((offsets.diff() < 0).any()):
        problems.append("offsets must not decrease")
    if experts.numel() and not 0 <= int(experts.min()) <= int(experts.max()) < weight.shape[0]:
        problems.append(f"experts must lie in [0, {weight.shape[0]})")
    if x_rows is not None and x_rows.numel() and not 0 <= int(x_rows.min()) <= int(x_rows.max()) < x.shape[0]:
        problems.append(f"x_rows must lie in [0, {x.shape[0]})")
    for name, tensor in (("row_scale", row_scale), ("out_rows", out_rows)):
        if tensor is not None and tensor.shape != (rows,):
            problems.append(f"{name} must have one entry per row, {rows}, not shape {tuple(tensor.shape)}")
    if out_rows is not None and out_rows.numel() and not 0 <= int(out_rows.min()) <= int(out_rows.max()) < out_count:
        problems.append(f"out_rows must lie in [0, {out_count})")
    if problems:
        raise ValueError("meobench::grouped_linear: " + "; ".join(problems) + ".")


def _kernel_for(x, weight, bias, offsets, experts, gates, x_rows, row_scale, out_rows) -> ctypes._CFuncPtr | None:
    """Return the compiled kernel when it can run on these tensors, else None (torch ops run)."""
    floats = [t for t in (x, weight, bias, gates, row_scale) if t is not None]
    indices = [t for t in (offsets, experts, x_rows, out_rows) if t is not None]
    if any(t.device.type != "cpu" or t.dtype != torch.float32 or not t.is_contiguous() for t in floats):
        return None
    if any(t.device.type != "cpu" or t.dtype != torch.int64 or not t.is_contiguous() for t in indices):
        return None
    library = compiled_library()
    return None if library is None else library.grouped_linear_float32


def _pointer(tensor: torch.Tensor | None) -> int | None:
    return None if tensor is None else tensor.data_ptr()
