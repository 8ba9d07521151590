"""Stage 2c: the TensorRT target. Always a TensorRT-ready ONNX (static shapes) plus a trtexec script;
an engine (.plan) only where the `tensorrt` package imports and a CUDA GPU answers."""

from __future__ import annotations

import shlex
from pathlib import Path


def tensorrt_status() -> tuple[bool, str]:
    """(can build engines here, why not)."""
    try:
        import tensorrt  # noqa: F401
    except Exception as exc:  # ImportError, or the PyPI stub's own error
        return False, f"tensorrt is not importable ({type(exc).__name__}); engines must be built on the target GPU"
    try:
        import torch

        if not torch.cuda.is_available():
            return False, "tensorrt imports but no CUDA GPU is visible; engines must be built on the target GPU"
    except Exception:
        return False, "cannot check for a CUDA GPU"
    return True, ""


def build_script(onnx_files: dict[str, str]) -> str:
    """A shell script, run from the bundle directory on the target, that builds one engine per component."""
    lines = [
        "#!/usr/bin/env sh",
        "# Build TensorRT engines for this bundle on the GPU that will run them (engines are tied to the",
        "# TensorRT version and the GPU). Run from the bundle directory: sh tensorrt/build_engines.sh",
        "set -eu",
    ]
    for component, path in sorted(onnx_files.items()):
        plan = path.removesuffix(".onnx") + ".plan"
        lines.append(f"trtexec --onnx={shlex.quote(path)} --saveEngine={shlex.quote(plan)} --skipInference"
                     f"  # {component}")
    return "\n".join(lines) + "\n"


def build_engine(onnx_path: Path) -> bytes:
    """Build a serialized engine from a TensorRT-ready ONNX file (TensorRT 10 API; the file form, so external data
    beside it is read too). Only call where tensorrt_status() is ok."""
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse the ONNX graph: {errors}")
    config = builder.create_builder_config()
    engine = builder.build_serialized_network(network, config)
    if engine is None:
        raise RuntimeError("TensorRT engine build failed")
    return bytes(engine)
