"""Run any component of any bundle on arrays from .npy files: what `edgesdk run` does for user models."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

from edgesdk.runtime.backends import open_session
from edgesdk.runtime.bundle import Bundle
from edgesdk.runtime.errors import EdgeSDKError
from edgesdk.runtime.files import write_bytes
from edgesdk.runtime.limits import MAX_ARRAY_FILE_BYTES, check_finite_array, check_input_file


def _load_npy(path: Path) -> np.ndarray:
    """A user .npy: a regular file of sane size, a plain (unpickled) numeric array, finite."""
    check_input_file(path, "input file", MAX_ARRAY_FILE_BYTES)
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, TypeError, OverflowError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise EdgeSDKError(f"{path} is not a plain .npy array ({first})") from None
    if not isinstance(array, np.ndarray):  # an .npz archive
        array.close()
        raise EdgeSDKError(f"{path} is an .npz archive; pass one .npy array per --input")
    if array.dtype.kind not in "biuf":
        raise EdgeSDKError(f"{path} holds {array.dtype} values; pass a numeric .npy array")
    return check_finite_array(f"input {path}", array)


def _check_dynamic(ranges: dict[str, Any], dim: str, size: int, name: str, sizes: dict[str, tuple[int, str]]) -> None:
    """A dynamic dim is inside the range the manifest gives it (what the model was exported for) and the same in
    every input that has it."""
    bounds = ranges.get(dim)
    if bounds is not None and not bounds["min"] <= size <= bounds["max"]:
        raise EdgeSDKError(f"input '{name}' has {dim} {size}; the component takes {dim} "
                           f"{bounds['min']}..{bounds['max']}")
    seen = sizes.setdefault(dim, (size, name))
    if seen[0] != size:
        raise EdgeSDKError(f"input '{name}' has {dim} {size}, input '{seen[1]}' has {dim} {seen[0]}; "
                           "give every input the same")


def _as_dtype(array: np.ndarray, dtype: str, name: str) -> np.ndarray:
    """The array as the dtype the manifest gives the input. A float array of another width is converted (numpy saves
    float64 by default) and must stay finite; anything else must be the dtype itself: an integer or boolean array
    for a float input (or the reverse) is a different kind of data, not a rounding away from it."""
    want = np.dtype(dtype)
    if array.dtype == want:
        return array
    if want.kind == "f" and array.dtype.kind == "f":
        with np.errstate(over="ignore"):
            return check_finite_array(f"input '{name}' as {dtype}", array.astype(want))
    raise EdgeSDKError(f"input '{name}' holds {array.dtype} values; the component takes {dtype} "
                       f"(save the array as {dtype})")


def run_component(bundle_path: Path, inputs: list[str], component: str | None = None, backend: str = "onnx",
                  output: Path | None = None) -> dict[str, np.ndarray]:
    bundle = Bundle.open(bundle_path)
    if component is None:
        if len(bundle.components) != 1:
            raise EdgeSDKError(f"the bundle has components {', '.join(bundle.components)}; choose one with "
                               "--component")
        component = next(iter(bundle.components))
    info = bundle.component(component)
    named = [item.partition("=") for item in inputs]
    if any(sep for _, sep, _ in named):
        feeds = {name: _load_npy(Path(path)) for name, sep, path in named if sep}
        if len(feeds) != len(named):
            raise EdgeSDKError("name every --input as name=file.npy, or none of them")
    else:
        if len(inputs) != len(info.input_names):
            raise EdgeSDKError(f"component '{component}' takes {len(info.input_names)} inputs "
                               f"({', '.join(info.input_names)}); got {len(inputs)}")
        feeds = {name: _load_npy(Path(path)) for name, path in zip(info.input_names, inputs, strict=True)}
    unknown = sorted(set(feeds) - set(info.input_names))
    if unknown:
        raise EdgeSDKError(f"component '{component}' has no input(s) {', '.join(unknown)}; "
                           f"its inputs are {', '.join(info.input_names)}")
    sizes: dict[str, tuple[int, str]] = {}  # dynamic dim -> (its size, the input that set it)
    for spec in info.inputs:
        array = feeds.get(spec.name)
        if array is None:
            continue
        fixed = [want == have for want, have in zip(spec.shape, array.shape, strict=False)
                 if isinstance(want, int) and want >= 0]
        if len(array.shape) != len(spec.shape) or not all(fixed):
            raise EdgeSDKError(f"input '{spec.name}' has shape {array.shape}; expected {list(spec.shape)}")
        for want, have in zip(spec.shape, array.shape, strict=True):
            if isinstance(want, str):
                _check_dynamic(info.dynamic_dims, want, have, spec.name, sizes)
        feeds[spec.name] = _as_dtype(array, spec.dtype, spec.name)
    outputs = open_session(bundle, component, backend).run(feeds)
    if output is not None:
        buffer = io.BytesIO()
        np.savez(buffer, **outputs)
        write_bytes(output, buffer.getvalue())
    return outputs
