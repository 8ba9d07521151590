"""Which optional parts of edgesdk are installed. `pip install edgesdk` is the torch-free runtime; the commands
that need PyTorch (or another extra) check here first, so that a missing extra is one line that says what to
install, not an ImportError deep inside the command."""

from __future__ import annotations

import importlib.util

from edgesdk.runtime.errors import EdgeSDKError

# extra -> the top-level modules it brings that its commands import (pyproject.toml's optional-dependencies)
EXTRAS: dict[str, tuple[str, ...]] = {
    "export": ("torch", "executorch", "torchao", "onnx", "onnxscript"),
    "train": ("torch", "sklearn", "skimage"),
    "diffusers": ("diffusers", "transformers", "accelerate"),
}


def module_installed(name: str) -> bool:
    """Whether ``name`` can be imported, found without importing it (finding torch costs nothing; importing it
    costs ~360 MB)."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a finder that refuses the name counts as not installed
        return False


def require_extra(command: str, extra: str, modules: tuple[str, ...] | None = None) -> None:
    """Raise the one-line error of ``edgesdk COMMAND`` when the extra it needs is not installed: ``modules`` of it
    (default: all of them) must import."""
    missing = [name for name in modules or EXTRAS[extra] if not module_installed(name)]
    if missing:
        raise EdgeSDKError(f"'edgesdk {command}' needs the {extra} extra ({', '.join(missing)} not installed): "
                           f"pip install 'edgesdk[{extra}]'")
