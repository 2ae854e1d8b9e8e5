"""Run a layer for its shapes only: floating-point results are allocated, never computed.

FLOP counters need each op's input shapes, not its values, but the layers cannot
run on the meta device: MoE dispatch reads the router's decisions back
(``bincount(...).tolist()``). ShapeOnlyMode keeps real tensors and runs for real
every op that has a non-floating result (top-k indices, sorting, bincount,
integer index arithmetic) and every view, so routing and dispatch take their
real code paths. Every other op gets an uninitialised result of the shape,
stride and dtype its meta kernel gives, and an in-place op leaves its target
unchanged. A batch-32 forward pass of the scaling scenario then costs
milliseconds instead of seconds, and layers built inside the mode skip their
random initialisation.

Results computed inside the mode are garbage: use it only to count.

Enter ShapeOnlyMode before (outside) any counter that is itself a dispatch mode,
such as FlopCounterMode: the counter then receives each op first. The torch profiler
records the meta computations too, nested under the ``meobench::shape_only``
range, so profiler counts must skip events inside that range.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from dataclasses import dataclass

import torch
from torch.profiler import record_function
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map

# Name of the profiler range around the mode's own meta computations.
SHAPE_ONLY_RANGE = "meobench::shape_only"

# Results up to this many elements are zero-filled rather than left uninitialised, so the
# router (whose logits are small) reads the same values on every run: all-zero logits send
# every token to the same K experts, and MoE dispatch then runs K experts rather than up to E.
ZERO_FILL_MAX_ELEMENTS = 2**17
# Meta results kept for reuse across modes; the cache is cleared when it reaches this size.
META_CACHE_MAX_ENTRIES = 4096
_meta_cache: dict[tuple, object | None] = {}

# Data-movement and selection ops of routing and dispatch that no FLOP counter counts.
ROUTING_OPS = frozenset(
    {
        "topk", "sort", "argsort", "scatter", "scatter_add", "gather", "index", "index_select",
        "index_add", "index_add_", "index_copy", "index_copy_", "bincount", "repeat_interleave", "embedding",
    }
)  # fmt: skip


@dataclass
class OpTally:
    """Calls of one op and the elements they produced."""

    calls: int = 0
    elements: int = 0


class ShapeOnlyMode(TorchDispatchMode):
    """Dispatch mode that allocates floating-point results instead of computing them.

    ``routing_ops`` tallies the routing ops (ROUTING_OPS) seen, by aten name, with the
    elements each produced: its results, or for an in-place op the source it read.
    """

    def __init__(self) -> None:
        super().__init__()
        self.routing_ops: dict[str, OpTally] = defaultdict(OpTally)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if _runs_for_real(func):
            return func(*args, **kwargs)
        written = _written_arguments(func, args, kwargs)
        if written:
            # In place: skip the op when it writes floating-point tensors, run it otherwise.
            if all(_is_floating(value) for value in written):
                result = written[0] if len(written) == 1 else tuple(written)
            else:
                result = func(*args, **kwargs)
        else:
            with record_function(SHAPE_ONLY_RANGE):
                meta_result = self._meta_result(func, args, kwargs)
                result = None if meta_result is None else _allocate(args, kwargs, meta_result)
            if meta_result is None:
                result = func(*args, **kwargs)
        if func.overloadpacket.__name__ in ROUTING_OPS:
            self._tally(func, args, kwargs, result)
        return result

    def _meta_result(self, func, args, kwargs) -> object | None:
        """Compute the op's result on meta tensors, or return None unless every tensor in it is floating-point.

        None also when the op has no meta kernel or needs values. Results are cached by
        the op and its arguments' metadata, because the same shapes recur across the
        counters of one case and across cases.
        """
        key = (func, _metadata(args), _metadata(kwargs))
        if key in _meta_cache:
            return _meta_cache[key]
        try:
            result = func(*tree_map(_as_meta, args), **tree_map(_as_meta, kwargs))
        except (NotImplementedError, RuntimeError):
            result = None
        tensors = [value for value in tree_flatten(result)[0] if isinstance(value, torch.Tensor)]
        if not tensors or not all(_is_floating(value) for value in tensors):
            result = None
        if len(_meta_cache) >= META_CACHE_MAX_ENTRIES:
            _meta_cache.clear()
        _meta_cache[key] = result
        return result

    def _tally(self, func, args, kwargs, result) -> None:
        written = _written_arguments(func, args, kwargs)
        if written:
            # In-place (index_add_, scatter_): count the largest tensor the op read, not its whole target.
            candidates = [value for value in tree_flatten((args, kwargs))[0] if isinstance(value, torch.Tensor)]
            candidates = [value for value in candidates if all(value is not target for target in written)]
        else:
            candidates = [value for value in tree_flatten(result)[0] if isinstance(value, torch.Tensor)]
        tally = self.routing_ops[f"aten::{func.overloadpacket.__name__}"]
        tally.calls += 1
        tally.elements += max((value.numel() for value in candidates), default=0)


def _is_floating(tensor: torch.Tensor) -> bool:
    return tensor.is_floating_point() or tensor.is_complex()


def _as_meta(value: object) -> object:
    if isinstance(value, torch.Tensor):
        return torch.empty_strided(value.shape, value.stride(), dtype=value.dtype, device="meta")
    return value


def _metadata(value: object) -> object:
    """Build a hashable key for op arguments: tensors by shape, stride, dtype and device."""
    leaves, spec = tree_flatten(value)
    return str(spec), tuple(
        (tuple(leaf.shape), leaf.stride(), leaf.dtype, leaf.device) if isinstance(leaf, torch.Tensor) else repr(leaf)
        for leaf in leaves
    )


@functools.cache
def _runs_for_real(func) -> bool:
    """Return whether an op always runs for real: a view, or an op without tensor results."""
    returns_tensor = any(isinstance(result.type, torch._C.TensorType) for result in func._schema.returns)
    return func.is_view or not returns_tensor


@functools.cache
def _written_positions(func) -> tuple[tuple[int, str], ...]:
    """(position, name) of the arguments an op writes in place."""
    return tuple(
        (position, argument.name)
        for position, argument in enumerate(func._schema.arguments)
        if argument.alias_info is not None and argument.alias_info.is_write
    )


def _written_arguments(func, args, kwargs) -> list[torch.Tensor]:
    """List the tensors an op writes in place (``self`` of add_, ``out=``), in schema order."""
    return [args[position] if position < len(args) else kwargs[name] for position, name in _written_positions(func)]


def _allocate(args, kwargs, meta_result: object) -> object:
    """Tensors shaped like ``meta_result`` on the device of the op's first tensor argument."""
    device = next(
        (value.device for value in tree_flatten((args, kwargs))[0] if isinstance(value, torch.Tensor)),
        kwargs.get("device") or torch.get_default_device(),
    )

    def allocate_like(value: object) -> object:
        if not isinstance(value, torch.Tensor):
            return value
        result = torch.empty_strided(value.shape, value.stride(), dtype=value.dtype, device=device)
        return result.zero_() if value.numel() <= ZERO_FILL_MAX_ELEMENTS else result

    return tree_map(allocate_like, meta_result)
