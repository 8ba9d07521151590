"""The ExecuTorch backend: the only runtime module that imports torch (executorch.runtime needs it).

It is imported lazily, when a session on backend "executorch" is opened, so every other runtime path stays
torch-free. An app on a phone links ExecuTorch's C++ runtime instead and loads no torch at all.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from edgesdk.runtime.backends import ManifestNamedSession, _prepare
from edgesdk.runtime.bundle import ComponentInfo
from edgesdk.runtime.errors import EdgeSDKError
from edgesdk.runtime.onebit import model_source


def import_bindings() -> None:
    """Import executorch.runtime (and torch with it) now, so that `edgesdk bench` can measure that cost apart from
    loading a program. Only this module imports them: the rest of the runtime stays torch-free."""
    import executorch.runtime  # noqa: F401


class ExecuTorchSession(ManifestNamedSession):
    """An ExecuTorch .pte program (XNNPACK-delegated). Positional inputs in the manifest's order."""

    def __init__(self, path: Path, info: ComponentInfo, lean_memory: bool = False) -> None:
        # torch is needed by executorch.runtime itself; importing it here keeps every other path torch-free
        # torchao, which executorch loads, logs every optional CUDA kernel library it cannot find; quiet that
        logging.getLogger("torchao").setLevel(logging.ERROR)
        logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)
        try:
            import torch
            from executorch.runtime import Runtime
        except ImportError as e:
            raise EdgeSDKError(f"backend 'executorch' needs the executorch Python binding, which needs torch ({e}): "
                               "pip install 'edgesdk[export]', or use backend 'onnx'") from None
        self._torch: Any = torch
        self._info = info
        source = model_source(path)  # a .1bit container is unpacked to the program's bytes here, at load
        program = Runtime.get().load_program(source if isinstance(source, bytes) else path)
        # batch -> method: a component exported at several static batches has one method per batch
        methods = info.static_shapes.get("executorch", {}).get("methods", {})
        names = set(program.method_names)
        missing = [m for m in [*methods.values(), "forward"] if m not in names]
        if missing:
            raise EdgeSDKError(f"{str(path)!r} lacks method(s) {missing} that the manifest names; re-export the bundle")
        # Each loaded method packs its own copy of the weights for XNNPACK (the file stores them once), so methods
        # other than "forward" load on first use: sampling never pays for the personalization method. "forward"
        # loads now (its weights are packed at open, where `edgesdk bench` checks memory) unless lean_memory asks
        # for nothing before use: personalization runs only the batch-(n+1) method, and one packed copy.
        self._program = program
        self._method_names = {int(batch): name for batch, name in methods.items()}
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
        outputs = method.execute([self._torch.from_numpy(a.copy()) for a in arrays])
        return {name: out.detach().cpu().numpy() for name, out in zip(self.output_names, outputs, strict=True)}
