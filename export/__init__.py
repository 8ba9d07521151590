"""edgesdk.export: torch.export capture, lowering to ExecuTorch / ONNX / TensorRT-ready ONNX, bundles, parity."""

import logging
import warnings

# Quiet the toolchain's own chatter so users see our progress lines and real problems: torchao logs every
# optional CUDA kernel library it cannot load on a CPU machine, torch warns about its own internal
# deprecations, and the ONNX exporter narrates each pass.
logging.getLogger("torchao").setLevel(logging.ERROR)
logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)
logging.getLogger("torch.onnx").setLevel(logging.ERROR)
for category in (FutureWarning, DeprecationWarning):
    warnings.filterwarnings("ignore", category=category, module=r"(torch|executorch|torchao|onnxscript|copyreg).*")
warnings.filterwarnings("ignore", message=".*experimental.*", module=r"executorch.*")
