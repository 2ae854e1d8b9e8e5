"""Build meobench's C kernels (meobench/layers/csrc) with the system compiler, once per CPU, and load them.

The compiler (``$CC``, else Python's configured one, else ``cc``) builds every
source in csrc into one shared library with OpenMP and ``-O3 -march=native``, at
first use, in a second or two. meobench's cache folder keeps the library under a
name hashed from the sources, the command and the CPU's flags
(``$MEOBENCH_CACHE_DIR`` overrides the folder), so a changed source or another
CPU gets its own build. When no library can be built or loaded, callers run
torch ops instead, and ``kernel_unavailable_reason`` gives the reason.
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

from meobench.cachedir import user_cache_dir

logger = logging.getLogger(__name__)

SOURCE_FOLDER = Path(__file__).parent / "csrc"
# Result and argument types of each exported function, so ctypes converts every call.
_P, _I = ctypes.c_void_p, ctypes.c_int64
SIGNATURES = {
    # x, depth, x_rows, weight, bias, f_total, groups, offsets, top_k, experts, gates,
    # row_scale, out, out_rows, accumulate, threads; returns 1 when it could not allocate its buffers
    "grouped_linear_float32": (ctypes.c_int, [_P, _I, _P, _P, _P, _I, _I, _P, _I, _P, _P, _P, _P, _P, _P, ctypes.c_int]),
}


def kernel_unavailable_reason() -> str | None:
    """Say why the compiled CPU kernels cannot be used on this machine, or None when they can."""
    return _build()[1]


def compiled_library() -> ctypes.CDLL | None:
    """Return the compiled CPU kernels, building them on first use; None when that failed."""
    return _build()[0]


# NOTE: the library links the system libgomp. torch's Linux wheels bundle a libgomp with the
# same soname, so both share one thread pool. A torch linked against another OpenMP runtime
# would run a second pool beside its own, and that case has not been measured.
@functools.cache
def _build() -> tuple[ctypes.CDLL | None, str | None]:
    compiler = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    command = [*compiler.split(), "-O3", "-march=native", "-fopenmp", "-shared", "-fPIC"]
    sources = sorted(SOURCE_FOLDER.glob("*.c"))
    texts = [source.read_text() for source in sources]
    key = hashlib.sha256("\n".join([*texts, " ".join(command), platform.machine(), _cpu_flags()]).encode())
    path = user_cache_dir() / "kernels" / f"meobench-{key.hexdigest()[:16]}.so"
    reason = None if path.exists() else _compile(command, sources, path)
    if reason is None:
        try:
            library = ctypes.CDLL(str(path))
        except OSError as error:
            reason = f"loading {path} failed: {error}; delete it to rebuild"
    if reason is not None:
        logger.warning("meobench's compiled CPU kernels are unavailable, so torch ops run instead: %s", reason)
        return None, reason
    for name, (restype, argtypes) in SIGNATURES.items():
        function = getattr(library, name)
        function.argtypes = argtypes
        function.restype = restype
    return library, None


def _compile(command: list[str], sources: list[Path], path: Path) -> str | None:
    """Compile ``sources`` into the library ``path``; return None, or why it failed."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        folder_context = tempfile.TemporaryDirectory(dir=path.parent)
    except OSError as error:
        return f"the cache folder {path.parent} is not writable ({error}); set MEOBENCH_CACHE_DIR to a writable folder"
    with folder_context as folder:
        built = Path(folder) / path.name
        try:
            completed = subprocess.run(
                [*command, *map(str, sources), "-o", str(built)], capture_output=True, text=True, timeout=120, check=False
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
