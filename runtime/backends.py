"""Inference backends behind one small interface: `session.run({name: array}) -> {name: array}`.

Every adapter takes and returns numpy arrays, so pipelines never see a framework type. torch is imported
only inside the ExecuTorch factory, because `executorch.runtime` exchanges torch tensors; where torch is not
installed, .pte files run on the C++ runtime's C library instead (runtime/cpp_backend.py).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from edgesdk.runtime.bundle import Bundle, ComponentInfo, TensorSpec
from edgesdk.runtime.errors import EdgeSDKError
from edgesdk.runtime.onebit import model_source


@runtime_checkable
class Session(Protocol):
    """One loaded component. Inputs and outputs are keyed by the manifest's tensor names."""

    @property
    def input_names(self) -> list[str]: ...

    @property
    def output_names(self) -> list[str]: ...

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...


# factory(bundle, component_name, threads, lean_memory) -> Session. lean_memory: trade a little speed for a lower
# peak (a backend without such a knob ignores it).
SessionFactory = Callable[[Bundle, str, int | None, bool], Session]


@dataclass(frozen=True)
class _Backend:
    factory: SessionFactory
    needs_file: bool  # False for e.g. an eager-torch reference backend that does not read bundle files


_REGISTRY: dict[str, _Backend] = {}
BACKENDS: list[str] = []  # registered names, in registration order


def register_backend(name: str, factory: SessionFactory, needs_file: bool = True) -> None:
    """Add (or replace) a backend. `needs_file=True` means the bundle must list a file under `name`."""
    if name not in _REGISTRY:
        BACKENDS.append(name)
    _REGISTRY[name] = _Backend(factory, needs_file)


def verify_model_files(bundle: Bundle, backend: str) -> None:
    """verify_model_file on every component's file for ``backend``: a pipeline calls it before it opens any session,
    so a corrupt UNet is refused before the text encoder's engine (and, with ExecuTorch's Python binding, torch,
    which takes seconds to import and logs on stderr) is loaded at all."""
    entry = _REGISTRY.get(backend)
    if entry is None or not entry.needs_file:
        return  # open_session names an unknown backend
    for info in bundle.components.values():
        if backend in info.files:
            verify_model_file(bundle.path_of(info.files[backend]), backend)


def open_session(bundle: Bundle, component_name: str, backend: str, threads: int | None = None,
                 lean_memory: bool = False, verified: bool = False) -> Session:
    """Load `component_name` on `backend`, wrapped for static batch when the bundle says so.

    ``lean_memory`` asks the backend for the lowest resident memory over speed (long on-device jobs such as
    personalization, which share the phone with everything else). ``verified``: the caller ran verify_model_files
    (the file is not checked twice)."""
    if backend not in _REGISTRY:
        raise EdgeSDKError(f"unknown backend {backend!r}; known backends: {', '.join(BACKENDS)}")
    info = bundle.component(component_name)
    entry = _REGISTRY[backend]
    if entry.needs_file and backend not in info.files:
        raise EdgeSDKError(f"bundle has no {backend!r} file for component {component_name!r}; "
                           f"it has: {', '.join(sorted(info.files)) or 'none'} (re-export with that target)")
    if entry.needs_file and not verified:
        verify_model_file(bundle.path_of(info.files[backend]), backend)
    session = entry.factory(bundle, component_name, threads, lean_memory)
    static_batch = info.static_shapes.get(backend, {}).get("batch")
    max_batch = info.dynamic_dims.get("batch", {}).get("max")
    if static_batch is not None:
        session = StaticBatchSession(session, int(static_batch), info.inputs)
    elif max_batch is not None:
        # exported with a bounded dynamic batch (ExecuTorch enforces the bound): split, no padding needed
        session = StaticBatchSession(session, int(max_batch), info.inputs, pad=False)
    return session


def _prepare(inputs: dict[str, np.ndarray], specs: list[TensorSpec], component: str) -> list[np.ndarray]:
    """Inputs in the component's order, cast to the manifest dtype, contiguous (what every engine wants)."""
    missing = [spec.name for spec in specs if spec.name not in inputs]
    if missing:
        raise EdgeSDKError(f"component {component!r} needs inputs {missing}; got {sorted(inputs)}")
    return [np.ascontiguousarray(inputs[spec.name], dtype=np.dtype(spec.dtype)) for spec in specs]


class ManifestNamedSession:
    """Base for sessions whose graphs take positional tensors: their names come from the manifest."""

    _info: ComponentInfo

    @property
    def input_names(self) -> list[str]:
        return self._info.input_names

    @property
    def output_names(self) -> list[str]:
        return self._info.output_names


def import_onnxruntime() -> Any:
    """onnxruntime, imported so that it writes nothing of its own. Its POSIX builds create a telemetry store at import
    (~/.cache/Microsoft/DeveloperTools/.onnxruntime/{deviceid,onnxruntime.db} and $TMPDIR/.ses) and may upload; its
    only switch that stops all of it (ORT 1.32; ORT_TELEMETRY_DISABLED only stops the usage events) is the CI
    variable, read once when the environment is created at import. It is set for the import only, unless the caller
    set it."""
    import sys

    if "onnxruntime" in sys.modules:
        return sys.modules["onnxruntime"]
    had = os.environ.get("CI")
    os.environ["CI"] = had or "1"
    try:
        import onnxruntime
    finally:
        if had is None:
            del os.environ["CI"]
    return onnxruntime


def _varint(data: memoryview, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ValueError("truncated varint")
        byte = data[pos]
        value |= (byte & 0x7F) << shift
        pos += 1
        if byte < 0x80:
            return value, pos
        shift += 7


def _walk_fields(view: memoryview, seen: set[int]) -> str:
    """Walks top-level protobuf fields into ``seen``; returns what is wrong, or ""."""
    pos = 0
    try:
        while pos < len(view):
            tag, pos = _varint(view, pos)
            field, wire = tag >> 3, tag & 7
            if field == 0:
                raise ValueError("field 0")
            if wire == 0:
                _, pos = _varint(view, pos)
            elif wire == 1:
                pos += 8
            elif wire == 2:
                length, pos = _varint(view, pos)
                pos += length
            elif wire == 5:
                pos += 4
            else:
                raise ValueError(f"wire type {wire}")
            if pos > len(view):
                raise ValueError("a field runs past the end")
            seen.add(field)
    except ValueError as e:
        return str(e)
    return ""


def verify_onnx_bytes(data: bytes | memoryview, what: str) -> None:
    """The cheapest sound check of an ONNX file before ONNX Runtime parses it (the onnx package is not a runtime
    dependency): its top-level protobuf fields are well formed, end exactly at the end of the file, and include the
    ModelProto's ir_version (1) and graph (7). ONNX Runtime's own loader then checks the graph."""
    seen: set[int] = set()
    # released on the way out, also by an exception: a memoryview left on an mmap keeps it from closing
    with memoryview(data) as view:
        problem = _walk_fields(view, seen)
    if problem:
        raise EdgeSDKError(f"{what} is not a valid ONNX model (truncated or corrupt: {problem}); "
                           "re-export the bundle")
    if not {1, 7} <= seen:
        raise EdgeSDKError(f"{what} is not a valid ONNX model (no {'graph' if 7 not in seen else 'ir_version'}); "
                           "re-export the bundle")


def verify_model_file(path: Path, backend: str) -> None:
    """Structural checks of a component's model file before any engine loads it (see verify_onnx_bytes and
    edgesdk.runtime.pte.verify_program): a corrupt file is a one-line error in milliseconds, never an abort."""
    import mmap

    from edgesdk.runtime.onebit import SUFFIX
    from edgesdk.runtime.pte import verify_program, verify_program_file

    what = repr(str(path))
    is_program = path.name.removesuffix(SUFFIX).endswith(".pte")
    if backend not in ("onnx", "executorch", "tensorrt") or path.suffix == ".plan":
        return
    if path.suffix == SUFFIX:
        source = model_source(path)
        assert isinstance(source, bytes)
        (verify_program if is_program else verify_onnx_bytes)(source, what)
    elif is_program:
        verify_program_file(path)
    else:
        try:
            with open(path, "rb") as f:
                if os.fstat(f.fileno()).st_size == 0:
                    raise EdgeSDKError(f"{what} is not a valid ONNX model (an empty file); re-export the bundle")
                with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
                    verify_onnx_bytes(mapped, what)
        except OSError as e:
            raise EdgeSDKError(f"cannot read {what}: {e.strerror or e}") from None


# With its QDQ handling switched off, ONNX Runtime constant-folds DequantizeLinear(integer weight) into an fp32
# initializer at session start: the int8 tiny-sd UNet then holds 12.1 MB of fp32 weights instead of 3.0 MB of
# int8 and runs no integer kernel. Every session we open pins the setting that keeps integer weights integer.
ORT_KEEP_INTEGER_WEIGHTS = {"session.disable_quant_qdq": "0"}


def onnx_session_options(threads: int | None = None, config: dict[str, str] | None = None,
                         lean_memory: bool = False, reference_kernels: bool = False) -> Any:
    """The SessionOptions every edgesdk ONNX Runtime session uses (``config`` entries override, for tests).

    ``reference_kernels`` turns graph optimizations off, so Q/DQ pairs are not fused into ONNX Runtime's integer CPU
    kernels: the graph's own arithmetic, which is how a TensorRT-ready graph is checked on a machine without a GPU
    (symmetric int8 activations would otherwise meet the x86 int16 saturation of the fused u8/s8 kernels)."""
    ort = import_onnxruntime()  # imported here so the runtime package imports without it

    options = ort.SessionOptions()
    options.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_DISABLE_ALL if reference_kernels
                                        else ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
    if lean_memory:
        # The CPU arena keeps every activation buffer it ever grew to, and the memory pattern pre-plans one block
        # for the whole graph: ~40 MB of the ZO process on the 100 M-parameter UNet, at no measurable speed cost
        # there (~5 % on tiny-sd; benchmarks/personalization_memory.py).
        options.enable_cpu_mem_arena = False
        options.enable_mem_pattern = False
    if threads is not None:
        options.intra_op_num_threads = int(threads)
    for key, value in {**ORT_KEEP_INTEGER_WEIGHTS, **(config or {})}.items():
        options.add_session_config_entry(key, value)
    return options


class OnnxSession:
    """ONNX Runtime on the CPU execution provider. ``custom_ops_library``: edgesdk's op library
    (libedgesdk_ort_ops.so), registered for a graph that uses its ops (a BNN bundle's binary graph); such a graph
    is run once at open on zeros, so that a malformed op node is refused here and not in the middle of a job.
    ``kernel`` / ``kernel_note``: which convolution kernel runs and why (``edgesdk.runtime.binary_ops``)."""

    kernel: str | None = None
    kernel_note: str | None = None

    def __init__(self, path: Path, info: ComponentInfo, threads: int | None = None, lean_memory: bool = False,
                 reference_kernels: bool = False, custom_ops_library: Path | None = None) -> None:
        ort = import_onnxruntime()

        options = onnx_session_options(threads, lean_memory=lean_memory, reference_kernels=reference_kernels)
        if custom_ops_library is not None:
            # a malformed op node is our one-line EdgeSDKError below; ONNX Runtime would also log it on stderr
            options.log_severity_level = 4
            try:
                options.register_custom_ops_library(str(custom_ops_library))
            except _ort_load_errors(ort) as e:
                first_line = (str(e).strip().splitlines() or [type(e).__name__])[0]
                raise EdgeSDKError(f"ONNX Runtime cannot load the op library {str(custom_ops_library)!r} "
                                   f"({first_line})") from None
        source = model_source(path)  # a .1bit container is unpacked to the model's bytes here, at load
        try:
            self._session = ort.InferenceSession(str(source) if isinstance(source, Path) else source,
                                                 sess_options=options, providers=["CPUExecutionProvider"])
        except _ort_load_errors(ort) as e:
            first_line = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise EdgeSDKError(f"{str(path)!r} is not a valid ONNX model for ONNX Runtime ({first_line}); "
                               "re-export the bundle") from None
        self._info = info
        check_graph_io(path, info, _ort_io(self._session.get_inputs()), _ort_io(self._session.get_outputs()))
        # the graph's own names are the truth; the manifest's specs give dtypes when it lists them
        specs = {spec.name: spec for spec in info.inputs}
        self._specs = [specs.get(i.name, TensorSpec(i.name, _ort_dtype(i.type), ()))
                       for i in self._session.get_inputs()]
        self._outputs = [o.name for o in self._session.get_outputs()]
        if custom_ops_library is not None:
            self._probe(path, ort)

    def _probe(self, path: Path, ort: Any) -> None:
        """One run on zeros at batch 1 (a custom op checks its weights' shape against its input when it runs):
        a graph whose op nodes do not fit is refused at open, in one line."""
        feeds = {}
        for spec in self._specs:
            dims = [1 if isinstance(d, str) else int(d) for d in spec.shape]
            if not spec.shape or spec.shape == _UNKNOWN_RANK or any(d < 1 for d in dims):
                return  # no shape to probe with; the first run says what is wrong
            feeds[spec.name] = np.zeros(dims, dtype=np.dtype(spec.dtype))
        try:
            self._session.run(self._outputs, feeds)
        except _ort_load_errors(ort) as e:
            first_line = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise EdgeSDKError(f"{str(path)!r} does not run on ONNX Runtime ({first_line}); re-export the "
                               "bundle") from None

    @property
    def input_names(self) -> list[str]:
        return [spec.name for spec in self._specs]

    @property
    def output_names(self) -> list[str]:
        return list(self._outputs)

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        arrays = _prepare(inputs, self._specs, self._info.name)
        results = self._session.run(self._outputs, dict(zip(self.input_names, arrays, strict=True)))
        return dict(zip(self._outputs, results, strict=True))


# ONNX Runtime's type names of the dtypes a manifest may give (docs/bundle-schema.json's "dtype")
_ORT_DTYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
               "tensor(int8)": "int8", "tensor(uint8)": "uint8", "tensor(int16)": "int16", "tensor(int32)": "int32",
               "tensor(int64)": "int64", "tensor(bool)": "bool"}


_UNKNOWN_RANK: tuple[int | str, ...] = ("...",)


def _ort_io(args: list[Any]) -> list[TensorSpec]:
    """A graph's inputs or outputs as specs: named dims (or unknown ones, None) become strings; a tensor of unknown
    rank gets _UNKNOWN_RANK."""
    def dims(shape: list[Any] | None) -> tuple[int | str, ...]:
        return _UNKNOWN_RANK if shape is None else tuple(d if isinstance(d, int) else str(d) for d in shape)

    return [TensorSpec(a.name, _ORT_DTYPES.get(a.type, a.type), dims(a.shape)) for a in args]


def _shape_text(shape: tuple[int | str, ...]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def check_graph_io(path: Path, info: ComponentInfo, inputs: list[TensorSpec], outputs: list[TensorSpec]) -> None:
    """Refuse a model file whose inputs and outputs are not the ones its manifest entry describes (another
    component's file, or a manifest edited by hand): the same input names, every listed output, and per tensor the
    same dtype, rank and fixed dims (a dim either side names is dynamic and not compared). Without this a wrong file
    runs, and fails later with an engine's message, or silently produces tensors of the wrong shape."""
    where = f"components.{info.name}"
    refused = f"; {str(path)!r} does not match it; re-export the bundle"
    graph_inputs = {spec.name for spec in inputs}
    manifest_inputs = set(info.input_names)
    if info.inputs and graph_inputs != manifest_inputs:
        raise EdgeSDKError(f"manifest field {where}.inputs: lists {sorted(manifest_inputs)}, the model takes "
                           f"{sorted(graph_inputs)}{refused}")
    graph = {("inputs", spec.name): spec for spec in inputs} | {("outputs", spec.name): spec for spec in outputs}
    for side, specs in (("inputs", info.inputs), ("outputs", info.outputs)):
        for i, spec in enumerate(specs):
            actual = graph.get((side, spec.name))
            if actual is None:
                raise EdgeSDKError(f"manifest field {where}.{side}[{i}].name: the model has no {side[:-1]} "
                                   f"{spec.name!r} (it has {sorted(n for s, n in graph if s == side)}){refused}")
            if actual.dtype != spec.dtype:
                raise EdgeSDKError(f"manifest field {where}.{side}[{i}].dtype: {spec.dtype}, the model's is "
                                   f"{actual.dtype}{refused}")
            if actual.shape == _UNKNOWN_RANK:
                continue
            fixed_differ = any(isinstance(a, int) and isinstance(b, int) and a != b
                               for a, b in zip(actual.shape, spec.shape, strict=False))
            if len(actual.shape) != len(spec.shape) or fixed_differ:
                raise EdgeSDKError(f"manifest field {where}.{side}[{i}].shape: {_shape_text(spec.shape)}, the "
                                   f"model's is {_shape_text(actual.shape)}{refused}")


def _ort_load_errors(ort: Any) -> tuple[type[BaseException], ...]:
    """What InferenceSession raises for a model it cannot load (its own exception classes derive from Exception)."""
    state = ort.capi.onnxruntime_pybind11_state
    names = ("Fail", "InvalidArgument", "InvalidProtobuf", "InvalidGraph", "NoSuchFile", "RuntimeException",
             "NotImplemented")
    return (RuntimeError, ValueError, *(getattr(state, n) for n in names if hasattr(state, n)))


def _ort_dtype(ort_type: str) -> str:
    # "tensor(float)" -> numpy name; only the types our exporters emit
    names = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
             "tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(bool)": "bool"}
    return names.get(ort_type, "float32")


class TensorRTSession(ManifestNamedSession):
    """A TensorRT 10 engine (.plan) on the GPU; device memory via cuda-python so no torch is needed.

    Engines are GPU-specific, so bundles ship TensorRT-ready ONNX and `tensorrt/build_engines.sh`; the .plan
    is either listed in the manifest or built next to the .onnx on the target.
    """

    def __init__(self, path: Path, info: ComponentInfo) -> None:
        import tensorrt as trt  # availability was checked by the factory

        try:
            from cuda.bindings import runtime as cudart
        except ImportError:
            try:
                from cuda import cudart  # cuda-python < 12.6 layout
            except ImportError:
                raise EdgeSDKError("backend 'tensorrt' needs the cuda-python package for GPU memory; "
                                   "pip install cuda-python on the target") from None
        self._trt: Any = trt
        self._cudart: Any = cudart
        self._info = info
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._engine = trt.Runtime(self._logger).deserialize_cuda_engine(path.read_bytes())
        if self._engine is None:
            raise EdgeSDKError(f"TensorRT could not load {str(path)!r} (built for another GPU or TensorRT "
                               "version?); rebuild it with tensorrt/build_engines.sh on this machine")
        self._context = self._engine.create_execution_context()
        self._stream = _cuda(cudart, cudart.cudaStreamCreate())

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        trt, cudart, context = self._trt, self._cudart, self._context
        arrays = _prepare(inputs, self._info.inputs, self._info.name)
        host: dict[str, np.ndarray] = {}
        for name, array in zip(self.input_names, arrays, strict=True):
            engine_dtype = trt.nptype(self._engine.get_tensor_dtype(name))
            host[name] = np.ascontiguousarray(array, dtype=engine_dtype)
            context.set_input_shape(name, host[name].shape)
        for name in self.output_names:  # output shapes are known once every input shape is set
            shape = tuple(context.get_tensor_shape(name))
            host[name] = np.empty(shape, dtype=trt.nptype(self._engine.get_tensor_dtype(name)))
        device: dict[str, int] = {}
        try:
            for name, array in host.items():
                device[name] = _cuda(cudart, cudart.cudaMalloc(max(array.nbytes, 1)))
                context.set_tensor_address(name, int(device[name]))
            for name in self.input_names:
                _cuda(cudart, cudart.cudaMemcpyAsync(device[name], host[name].ctypes.data, host[name].nbytes,
                                                     cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, self._stream))
            if not context.execute_async_v3(stream_handle=self._stream):
                raise EdgeSDKError(f"TensorRT failed to run component {self._info.name!r}; see the log above")
            for name in self.output_names:
                _cuda(cudart, cudart.cudaMemcpyAsync(host[name].ctypes.data, device[name], host[name].nbytes,
                                                     cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost, self._stream))
            _cuda(cudart, cudart.cudaStreamSynchronize(self._stream))
        finally:
            for pointer in device.values():
                cudart.cudaFree(pointer)
        return {name: host[name] for name in self.output_names}


def _cuda(cudart: Any, result: Any) -> Any:
    """cuda-python returns (error, value...) tuples; turn a non-success error into an exception."""
    error, *values = result if isinstance(result, tuple) else (result,)
    if error != cudart.cudaError_t.cudaSuccess:
        raise EdgeSDKError(f"CUDA call failed: {error}; check the GPU driver with nvidia-smi")
    return values[0] if values else None


def _onnx_factory(bundle: Bundle, component: str, threads: int | None, lean_memory: bool) -> Session:
    from edgesdk.runtime.binary_ops import onnx_kernel_choice

    info = bundle.component(component)
    choice = onnx_kernel_choice(bundle, info)  # a BNN bundle's binary graph where the op library is here
    if choice.library is not None:
        verify_model_file(choice.path, "onnx")  # open_session checked the float file; this one is checked here
    session = OnnxSession(choice.path, info, threads, lean_memory, custom_ops_library=choice.library)
    session.kernel, session.kernel_note = choice.kernel, choice.note
    return session


def session_kernel(session: Session) -> tuple[str | None, str | None]:
    """(kernel, note) of a session (see OnnxSession), looking through a StaticBatchSession; (None, None) where the
    backend does not say."""
    inner = getattr(session, "inner", session)
    return getattr(inner, "kernel", None), getattr(inner, "kernel_note", None)


# Which ExecuTorch runtime runs .pte files: "python" (the executorch binding, which needs torch), "cpp" (the C++
# runtime's C library through ctypes, no torch: runtime/cpp_backend.py) or "auto" (the binding where it is
# installed, else the C library where it is built).
EXECUTORCH_RUNTIME_ENV = "EDGESDK_EXECUTORCH_RUNTIME"


def _installed(module: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None  # found, not imported: torch costs nothing here
    except (ImportError, ValueError):
        return False


def executorch_runtime() -> str:
    """"python" or "cpp": the ExecuTorch runtime that sessions on backend "executorch" use here (see above)."""
    choice = os.environ.get(EXECUTORCH_RUNTIME_ENV, "auto")
    if choice not in ("auto", "python", "cpp"):
        raise EdgeSDKError(f"{EXECUTORCH_RUNTIME_ENV}={choice!r}: choose auto, python or cpp")
    if choice != "auto":
        return choice
    if _installed("executorch") and _installed("torch"):
        return "python"
    from edgesdk.runtime.cpp_backend import library_path

    if library_path() is not None:
        return "cpp"
    raise EdgeSDKError("backend 'executorch' needs the executorch Python binding, which needs torch (pip install "
                       "'edgesdk[export]'), or the C++ runtime's library (`make cpp` in a checkout; "
                       "EDGESDK_CPP_LIB names a build); or use backend 'onnx'")


def _executorch_factory(bundle: Bundle, component: str, threads: int | None, lean_memory: bool) -> Session:
    info = bundle.component(component)
    if executorch_runtime() == "cpp":
        from edgesdk.runtime.cpp_backend import CppExecuTorchSession

        return CppExecuTorchSession(bundle, info, threads, lean_memory)
    # threads: XNNPACK's thread pool is process-wide in the ExecuTorch pybindings, sized while no session is open
    from edgesdk.runtime.executorch_backend import ExecuTorchSession  # the one module that may pull in torch

    return ExecuTorchSession(bundle.path_of(info.files["executorch"]), info, lean_memory, threads)


def _tensorrt_factory(bundle: Bundle, component: str, threads: int | None, lean_memory: bool) -> Session:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        raise EdgeSDKError("backend 'tensorrt' needs the tensorrt package and an NVIDIA GPU; this machine has "
                           "neither — use onnx or executorch, or run tensorrt/build_engines.sh on the target") from None
    info = bundle.component(component)
    listed = bundle.path_of(info.files["tensorrt"])
    plan = listed if listed.suffix == ".plan" else listed.with_suffix(".plan")
    if not plan.is_file():
        raise EdgeSDKError(f"no TensorRT engine {str(plan)!r}; run tensorrt/build_engines.sh in the bundle on "
                           "this GPU to build it")
    return TensorRTSession(plan, info)


class StaticBatchSession:
    """Feeds a fixed-batch graph any batch: chunks of exactly `batch` rows, the last padded, padding dropped.

    Padding repeats the last real row (not zeros) so the padded rows stay in-distribution and cannot
    produce NaNs or slow denormal paths. With `pad=False` it only splits (graphs with a maximum batch).
    """

    def __init__(self, inner: Session, batch: int, specs: list[TensorSpec] | None = None, pad: bool = True) -> None:
        if batch < 1:
            raise EdgeSDKError(f"static batch must be at least 1, got {batch}; re-export the bundle")
        self.inner = inner
        self.batch = batch
        self.pad = pad
        # inputs whose first dim is fixed (not "batch") are passed whole to every chunk; without shape info
        # in the manifest every input is treated as batched
        batched = {spec.name for spec in specs or [] if spec.shape[:1] == ("batch",)}
        self._batched: set[str] | None = batched or None

    @property
    def input_names(self) -> list[str]:
        return self.inner.input_names

    @property
    def output_names(self) -> list[str]:
        return self.inner.output_names

    def _is_batched(self, name: str) -> bool:
        return self._batched is None or name in self._batched

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if any(name not in inputs for name in self.input_names):
            return self.inner.run(inputs)  # the inner session names what is missing
        sizes = {len(array) for name, array in inputs.items() if self._is_batched(name)}
        if len(sizes) != 1:
            raise EdgeSDKError(f"inputs disagree on batch size: {sorted(sizes)}; pass the same number of rows")
        total = sizes.pop()
        exact = total == self.batch or total in getattr(self.inner, "exact_batches", ())
        if exact or (not self.pad and total < self.batch):
            return self.inner.run(inputs)  # nothing to split or pad
        pieces: dict[str, list[np.ndarray]] = {name: [] for name in self.output_names}
        for start in range(0, total, self.batch):
            chunk = {}
            for name, array in inputs.items():
                if not self._is_batched(name):
                    chunk[name] = array
                    continue
                rows = array[start:start + self.batch]
                missing = self.batch - len(rows) if self.pad else 0
                chunk[name] = np.concatenate([rows, np.repeat(rows[-1:], missing, axis=0)]) if missing else rows
            real = min(self.batch, total - start)
            for name, out in self.inner.run(chunk).items():
                pieces.setdefault(name, []).append(out[:real])
        return {name: np.concatenate(parts) for name, parts in pieces.items()}


register_backend("onnx", _onnx_factory)
register_backend("executorch", _executorch_factory)
register_backend("tensorrt", _tensorrt_factory)
