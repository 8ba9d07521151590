"""The ExecuTorch backend: the only runtime module that imports torch (executorch.runtime needs it).

It is imported lazily, when a session on backend "executorch" is opened, so every other runtime path stays
torch-free. An app on a phone links ExecuTorch's C++ runtime instead and loads no torch at all.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import warnings
import weakref
from pathlib import Path
from typing import Any

import numpy as np

from edgesdk.runtime.backends import ManifestNamedSession, _prepare, check_graph_io
from edgesdk.runtime.bundle import ComponentInfo, TensorSpec
from edgesdk.runtime.errors import EdgeSDKError
from edgesdk.runtime.onebit import model_source

# torch's compiler cache folder (torch/_inductor/runtime/cache_dir_utils.py): importing torch._dynamo, which the
# executorch binding does, creates it, by default as $TMPDIR/torchinductor_<user>
_TORCH_CACHE_ENV = "TORCHINDUCTOR_CACHE_DIR"


def import_bindings() -> None:
    """Import executorch.runtime (and torch with it) now, so that `edgesdk bench` can measure that cost apart from
    loading a program. Only this module imports them: the rest of the runtime stays torch-free.

    Running a program compiles nothing, yet the import creates torch's compiler cache folder in $TMPDIR; a runtime
    writes nothing but its output (README, privacy), so unless the user chose a cache folder, the import gets a
    scratch one that is removed as soon as the import is done."""
    import sys

    if "executorch.runtime" in sys.modules:
        return
    if _TORCH_CACHE_ENV in os.environ or "torch._dynamo" in sys.modules:
        import executorch.runtime  # noqa: F401
        return
    scratch = tempfile.mkdtemp(prefix="edgesdk-torch-")
    os.environ[_TORCH_CACHE_ENV] = scratch
    try:
        import executorch.runtime  # noqa: F401
    finally:
        # torch keeps the folder's path only (its dynamo disk cache writes when something is compiled); later
        # compilation, which a runtime never does, goes to torch's default again
        if os.environ.get(_TORCH_CACHE_ENV) == scratch:
            del os.environ[_TORCH_CACHE_ENV]
        shutil.rmtree(scratch, ignore_errors=True)


# Sessions alive in this process: their methods' XNNPACK runtimes hold the binding's thread pool.
_open_sessions = 0


def _session_closed() -> None:
    global _open_sessions
    _open_sessions -= 1


def thread_count() -> int:
    """Threads of the ExecuTorch Python binding's pool (process-wide; every XNNPACK delegate runs on it)."""
    from executorch.extension.pybindings.portable_lib import _threadpool_get_thread_count

    return int(_threadpool_get_thread_count())


def use_threads(threads: int | None) -> None:
    """Size the binding's thread pool for a session about to open (None: leave it, ExecuTorch's default is one thread
    per performance core). The pool is process-wide and an XNNPACK runtime keeps a pointer to it from the moment its
    method loads, so it is resized only while no session is open; beside open sessions a different size keeps the
    pool as it is, with a warning (a refusal would break pipelines that open components one by one while an earlier
    one, a parity check's say, is still alive)."""
    if threads is None:
        return
    if threads < 1:
        raise EdgeSDKError(f"threads must be at least 1, got {threads}")
    from executorch.extension.pybindings.portable_lib import _unsafe_reset_threadpool

    have = thread_count()
    if have == threads:
        return
    if _open_sessions > 0:
        warnings.warn(f"threads {threads}: ExecuTorch's thread pool is shared by the process and {_open_sessions} "
                      f"open session(s) use it with {have} threads; this session runs on {have} too", stacklevel=3)
        return
    _unsafe_reset_threadpool(int(threads))


# ExecuTorch's ScalarType codes (runtime/core/portable_type/scalar_type.h) of the dtypes a manifest may name
_SCALAR_TYPES = {0: "uint8", 1: "int8", 3: "int32", 4: "int64", 5: "float16", 6: "float32", 11: "bool"}


def check_method_io(path: Path, info: ComponentInfo, method: str, meta: Any) -> None:
    """Refuse a program whose method takes or returns other tensors than the manifest entry lists (the C++
    runtime's check, session.cpp): as many inputs and outputs, and per tensor the dtype, rank and fixed dims. A
    program's I/O has no names: they are the manifest's, in its order."""
    if meta.num_inputs() != len(info.inputs) or meta.num_outputs() != len(info.outputs):
        raise EdgeSDKError(f"manifest field components.{info.name}: lists {len(info.inputs)} inputs and "
                           f"{len(info.outputs)} outputs, but method {method!r} of {str(path)!r} takes "
                           f"{meta.num_inputs()} and returns {meta.num_outputs()}; re-export the bundle")

    def specs(listed: list[TensorSpec], tensor_meta: Any) -> list[TensorSpec]:
        found = []
        for i, spec in enumerate(listed):
            try:
                tensor = tensor_meta(i)
            except (RuntimeError, ValueError):  # a value that is not a tensor
                found.append(TensorSpec(spec.name, "not a tensor", spec.shape))
                continue
            found.append(TensorSpec(spec.name, _SCALAR_TYPES.get(int(tensor.dtype()), f"type {tensor.dtype()}"),
                                    tuple(int(d) for d in tensor.sizes())))
        return found

    check_graph_io(path, info, specs(info.inputs, meta.input_tensor_meta), specs(info.outputs, meta.output_tensor_meta))


class ExecuTorchSession(ManifestNamedSession):
    """An ExecuTorch .pte program (XNNPACK-delegated). Positional inputs in the manifest's order."""

    def __init__(self, path: Path, info: ComponentInfo, lean_memory: bool = False, threads: int | None = None) -> None:
        # torch is needed by executorch.runtime itself; importing it here keeps every other path torch-free
        # torchao, which executorch loads, logs every optional CUDA kernel library it cannot find; quiet that
        logging.getLogger("torchao").setLevel(logging.ERROR)
        logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)
        try:
            import_bindings()
            import torch
            from executorch.runtime import Runtime
        except ImportError as e:
            raise EdgeSDKError(f"backend 'executorch' needs the executorch Python binding, which needs torch ({e}): "
                               "pip install 'edgesdk[export]', or use backend 'onnx'") from None
        self._torch: Any = torch
        self._info = info
        use_threads(threads)
        source = model_source(path)  # a .1bit container is unpacked to the program's bytes here, at load
        from executorch.runtime import Verification

        try:  # full verification: a checksum says the file is the one exported, not that the exporter was honest
            program = Runtime.get().load_program(source if isinstance(source, bytes) else path,
                                                 verification=Verification.InternalConsistency)
        except (RuntimeError, ValueError) as e:
            first_line = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise EdgeSDKError(f"{str(path)!r} is not a valid ExecuTorch program ({first_line}); "
                               "re-export the bundle") from None
        # batch -> method: a component exported at several static batches has one method per batch
        methods = info.static_shapes.get("executorch", {}).get("methods", {})
        names = set(program.method_names)
        missing = [m for m in [*methods.values(), "forward"] if m not in names]
        if missing:
            raise EdgeSDKError(f"{str(path)!r} lacks method(s) {missing} that the manifest names; re-export the bundle")
        for name in dict.fromkeys(["forward", *methods.values()]):
            check_method_io(path, info, name, program.metadata(name))
        # Each loaded method packs its own copy of the weights for XNNPACK (the file stores them once), so methods
        # other than "forward" load on first use: sampling never pays for the personalization method. "forward"
        # loads now (its weights are packed at open, where `edgesdk bench` checks memory) unless lean_memory asks
        # for nothing before use: personalization runs only the batch-(n+1) method, and one packed copy.
        self._program = program
        self._method_names = {int(batch): name for batch, name in methods.items()}
        global _open_sessions
        _open_sessions += 1
        weakref.finalize(self, _session_closed)
        self._loaded: dict[str, Any] = {} if lean_memory else {"forward": program.load_method("forward")}

    @property
    def exact_batches(self) -> set[int]:
        """Batches a method takes as they are (the static-batch wrapper passes these through unsplit)."""
        return set(self._method_names)

    def _method(self, batch: int) -> Any:
        name = self._method_names.get(batch, "forward")
        if name not in self._loaded:
            self._loaded[name] = self._program.load_method(name)
        return self._loaded[name]

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        arrays = _prepare(inputs, self._info.inputs, self._info.name)
        method = self._method(len(arrays[0]) if arrays and arrays[0].ndim else -1)
        # torch.from_numpy shares memory; the copy keeps the caller's arrays safe from in-place kernels
        inputs_t = [self._torch.from_numpy(a.copy()) for a in arrays]
        binding = getattr(method, "_method", None)  # executorch.runtime.Method wraps the binding's method
        if binding is None:
            outputs = method.execute(inputs_t)
            return {name: out.detach().cpu().numpy() for name, out in zip(self.output_names, outputs, strict=True)}
        # Outputs as views of the method's memory, copied here by numpy: the binding's own copy (clone_outputs) is a
        # torch op, which for outputs past torch's grain size (32k elements) wakes torch's OpenMP threads, and they
        # spin after it on the cores XNNPACK's pool runs the next call on (a 197x768 output: 31 -> 22 ms per call
        # on 2 cores). The copy is needed: the next call overwrites that memory.
        outputs = binding(inputs_t, clone_outputs=False)
        return {name: out.numpy().copy() for name, out in zip(self.output_names, outputs, strict=True)}
