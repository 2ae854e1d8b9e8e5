"""The gate-weighted sum of each sequence's selected experts, as one torch op with a compiled CPU kernel.

    out[b, n] = sum_k gates[b, k] * stack[indices[b, k], n]

``stack`` [E, N] contains one row per expert: either a tile of d_out rows of the
stacked weights, flattened into a view whose rows lie one expert apart, or the
stacked biases. Only the K selected rows of each sequence are read and
multiplied, so the merge costs B*K*N multiply-adds, not B*E*N.

``merge_selected`` runs the op ``meobench::merge_selected`` when no gradient is
needed. On the CPU, for float32 and float64, it calls a C kernel that the
system C compiler builds at first use (cached in meobench's cache folder, one
build per CPU). The kernel walks N in chunks: each selected expert's chunk is
read from memory once and added into every sequence that selected it while it
is still in cache, on torch's thread count. Elsewhere (no compiler, another
dtype or device) the op, and every call that needs a gradient, runs torch.bmm
on the gathered rows, which has the same FLOPs. FlopCounterMode and fvcore count
the op by formula; the torch profiler cannot count a custom op.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import subprocess
import sysconfig
import tempfile
from pathlib import Path

import torch

from meobench.cachedir import user_cache_dir

logger = logging.getLogger(__name__)

# Elements of one expert row per chunk: 16 KiB of float32, so the chunks of 16 experts
# (256 KiB) and of 8 outputs (128 KiB) fit a 1 MiB L2 cache together.
_CHUNK = 4096

_SOURCE = r"""
#include <stdint.h>

#define CHUNK %(chunk)d

/* One pass adds up to four selected experts into a sequence's output chunk, which
   loads and stores that chunk once per four experts rather than once per expert. */
#define TERMS1 g0 * w0[n]
#define TERMS2 TERMS1 + g1 * w1[n]
#define TERMS3 TERMS2 + g2 * w2[n]
#define TERMS4 TERMS3 + g3 * w3[n]
#define ACCUMULATE(TERMS)                                                                       \
    if (k == 0)                                                                                \
        for (int64_t n = start; n < stop; n++) o[n] = TERMS;                                   \
    else                                                                                       \
        for (int64_t n = start; n < stop; n++) o[n] += TERMS;

#define MERGE(NAME, T)                                                                          \
void NAME(const T* stack, int64_t row_stride, int64_t n_total, const int64_t* indices,          \
          const T* gates, int64_t batch, int64_t top_k, T* out, int threads) {                  \
    int64_t chunks = (n_total + CHUNK - 1) / CHUNK;                                            \
    _Pragma("omp parallel for schedule(static) num_threads(threads)")                          \
    for (int64_t c = 0; c < chunks; c++) {                                                     \
        int64_t start = c * CHUNK;                                                             \
        int64_t stop = start + CHUNK < n_total ? start + CHUNK : n_total;                      \
        for (int64_t b = 0; b < batch; b++) {                                                  \
            T* restrict o = out + b * n_total;                                                 \
            const int64_t* selected = indices + b * top_k;                                     \
            const T* g = gates + b * top_k;                                                    \
            for (int64_t k = 0; k < top_k; k += 4) {                                           \
                int64_t terms = top_k - k < 4 ? top_k - k : 4;                                 \
                /* Terms past the last expert repeat the first one and are never read. */      \
                const T* restrict w0 = stack + selected[k] * row_stride;                       \
                const T* restrict w1 = stack + selected[terms > 1 ? k + 1 : k] * row_stride;   \
                const T* restrict w2 = stack + selected[terms > 2 ? k + 2 : k] * row_stride;   \
                const T* restrict w3 = stack + selected[terms > 3 ? k + 3 : k] * row_stride;   \
                T g0 = g[k];                                                                   \
                T g1 = terms > 1 ? g[k + 1] : 0;                                               \
                T g2 = terms > 2 ? g[k + 2] : 0;                                               \
                T g3 = terms > 3 ? g[k + 3] : 0;                                               \
                switch (terms) {                                                               \
                    case 4: ACCUMULATE(TERMS4) break;                                          \
                    case 3: ACCUMULATE(TERMS3) break;                                          \
                    case 2: ACCUMULATE(TERMS2) break;                                          \
                    default: ACCUMULATE(TERMS1) break;                                         \
                }                                                                              \
            }                                                                                  \
        }                                                                                      \
    }                                                                                          \
}

MERGE(merge_float32, float)
MERGE(merge_float64, double)
""" % {"chunk": _CHUNK}

_KERNEL_DTYPES = {torch.float32: "merge_float32", torch.float64: "merge_float64"}


def merge_selected(stack: torch.Tensor, indices: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
    """Return out [B, N]: each sequence's selected rows of ``stack`` [E, N] weighted by ``gates`` [B, K] and summed."""
    if torch.is_grad_enabled() and (stack.requires_grad or gates.requires_grad):
        return merge_with_torch(stack, indices, gates)
    return torch.ops.meobench.merge_selected(stack, indices, gates)


def merge_with_torch(stack: torch.Tensor, indices: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
    """Compute merge_selected with torch ops: gather the selected rows [B, K, N], then one batched product."""
    return torch.bmm(gates.unsqueeze(1), stack[indices]).squeeze(1)


@torch.library.custom_op("meobench::merge_selected", mutates_args=())
def _merge_selected_op(stack: torch.Tensor, indices: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
    kernel = _kernel_for(stack, indices, gates)
    if kernel is None:
        return merge_with_torch(stack, indices, gates)
    batch, top_k = indices.shape
    out = stack.new_empty(batch, stack.shape[1])
    gates = gates.contiguous()
    indices = indices.contiguous()
    kernel(
        stack.data_ptr(), stack.stride(0), stack.shape[1], indices.data_ptr(), gates.data_ptr(),
        batch, top_k, out.data_ptr(), torch.get_num_threads(),
    )  # fmt: skip
    return out


@_merge_selected_op.register_fake
def _merge_selected_fake(stack: torch.Tensor, indices: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
    return stack.new_empty(indices.shape[0], stack.shape[1])


def merge_selected_flops(stack_shape, indices_shape, gates_shape, *args, out_shape=None, **kwargs) -> int:
    """FLOPs of meobench::merge_selected: one multiply-add (2 FLOPs) per selected row element, B*K*N."""
    batch, top_k = indices_shape
    return 2 * batch * top_k * stack_shape[1]


def _kernel_for(stack: torch.Tensor, indices: torch.Tensor, gates: torch.Tensor) -> ctypes._CFuncPtr | None:
    """Return the compiled kernel that can merge these tensors, or None when torch ops must."""
    if stack.device.type != "cpu" or stack.dtype not in _KERNEL_DTYPES or gates.dtype != stack.dtype:
        return None
    if stack.stride(1) != 1 or indices.dtype != torch.int64:
        return None
    library = compiled_library()
    if library is None:
        return None
    return getattr(library, _KERNEL_DTYPES[stack.dtype])


def kernel_unavailable_reason() -> str | None:
    """Say why the compiled CPU merge kernel cannot be used on this machine, or None when it can."""
    return _build()[1]


def compiled_library() -> ctypes.CDLL | None:
    """Return the compiled CPU merge kernels, building them on first use; None when that failed."""
    return _build()[0]


# NOTE: the library links the system libgomp. torch's Linux wheels bundle a libgomp with the
# same soname, so both share one thread pool. A torch linked against another OpenMP runtime
# would run a second pool beside its own, and that case has not been measured.
@functools.cache
def _build() -> tuple[ctypes.CDLL | None, str | None]:
    compiler = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    command = [*compiler.split(), "-O3", "-march=native", "-fopenmp", "-shared", "-fPIC"]
    key = hashlib.sha256("\n".join([_SOURCE, " ".join(command), platform.machine(), _cpu_flags()]).encode())
    path = user_cache_dir() / "kernels" / f"merge-{key.hexdigest()[:16]}.so"
    reason = None if path.exists() else _compile(command, path)
    if reason is None:
        try:
            library = ctypes.CDLL(str(path))
        except OSError as error:
            reason = f"loading {path} failed: {error}; delete it to rebuild"
    if reason is not None:
        logger.warning("the compiled MEO merge kernel is unavailable, so torch ops merge instead: %s", reason)
        return None, reason
    argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p]
    argtypes += [ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p, ctypes.c_int]
    for name in _KERNEL_DTYPES.values():
        function = getattr(library, name)
        function.argtypes = argtypes
        function.restype = None
    return library, None


def _compile(command: list[str], path: Path) -> str | None:
    """Compile the kernel source to ``path``; return None, or why it failed."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        folder_context = tempfile.TemporaryDirectory(dir=path.parent)
    except OSError as error:
        return f"the cache folder {path.parent} is not writable ({error}); set MEOBENCH_CACHE_DIR to a writable folder"
    with folder_context as folder:
        source = Path(folder) / "merge.c"
        source.write_text(_SOURCE)
        built = Path(folder) / path.name
        try:
            completed = subprocess.run(
                [*command, str(source), "-o", str(built)], capture_output=True, text=True, timeout=120, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as error:
            return f"{command[0]} failed to run: {error}"
        if completed.returncode != 0:
            return (
                f"{' '.join(command)} failed with exit status {completed.returncode}: {completed.stderr.strip()[:500]}"
            )
        # Renaming is atomic, so parallel processes never load a half-written library.
        os.replace(built, path)
    return None


def _cpu_flags() -> str:
    """Return the CPU's feature flags on Linux (the build uses -march=native), else the processor name."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return line
    except OSError:
        pass
    return platform.processor()
