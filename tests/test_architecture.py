"""The import arrows of the design (DESIGN.md), checked on the source: every import statement of every module in
the four rooms, at the top of a file or inside a function (or under ``if TYPE_CHECKING``: a dependency all the same).

    sdk -> export -> quant,  sdk -> runtime,  export -> runtime,  quant -> runtime
    runtime imports only edgesdk.runtime, and never torch (executorch_backend.py excepted, see TORCH_ALLOWED)
    quant   imports nothing from edgesdk.export nor the front
    export  imports nothing from the front
    sdk/zoo imports nothing from sdk/train (edgesdk.train)

``edgesdk.runtime.errors`` is common ground: every room may import it (it is in the runtime, which every room
may import). Module names come from the files: pyproject's ``package-dir`` says which folder is which package, and
every ``.py`` in a folder with an ``__init__.py`` under it is a module (so runtime/cpp's test scripts are not).
The front is every module of the ``edgesdk`` folder (sdk/) that is not in another room: ``edgesdk`` itself,
``edgesdk.cli``, ``edgesdk.zoo.tiny_sd``...
"""

from __future__ import annotations

import ast
import tomllib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_DIRS: dict[str, str] = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
    "package-dir"]  # {"edgesdk": "sdk", "edgesdk.quant": "quant", ...}
FRONT_PACKAGE = next(package for package, folder in PACKAGE_DIRS.items() if folder == "sdk")

# Importing any of these imports torch.
TORCH_PACKAGES = ("torch", "torchao", "torchvision", "torchaudio", "functorch", "executorch", "diffusers",
                  "transformers", "accelerate", "safetensors.torch")
# executorch.runtime runs .pte programs on torch tensors (it imports torch itself), so the ExecuTorch backend needs
# both; backends.py imports that module only when an "executorch" session is opened.
# Its thread pool is sized through the binding module executorch.runtime itself loads.
TORCH_ALLOWED = {"runtime/executorch_backend.py": ("executorch.runtime", "executorch.extension.pybindings.portable_lib",
                                                   "torch")}


def _module_name(relpath: Path) -> str:
    """runtime/zo.py -> edgesdk.runtime.zo; sdk/zoo/__init__.py -> edgesdk.zoo (the longest package-dir match)."""
    folder, package = max(((Path(f), p) for p, f in PACKAGE_DIRS.items() if relpath.is_relative_to(f)),
                          key=lambda pair: len(pair[0].parts))
    parts = [*package.split("."), *relpath.relative_to(folder).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def source_modules() -> dict[str, Path]:
    """Every module of the four rooms, by name: the .py files of the package folders and their sub-packages."""
    modules: dict[str, Path] = {}
    for folder in PACKAGE_DIRS.values():
        packages = [ROOT / folder]
        while packages:
            package = packages.pop()
            for path in sorted(package.iterdir()):
                if path.is_dir() and (path / "__init__.py").is_file():
                    packages.append(path)
                elif path.suffix == ".py":
                    relpath = path.relative_to(ROOT)
                    modules.setdefault(_module_name(relpath), relpath)
    return modules


MODULES = source_modules()


def room(module: str) -> str | None:
    """The folder a module of ours lives in ("sdk", "quant", "export", "runtime"); None for anyone else's."""
    matches = [p for p in PACKAGE_DIRS if module == p or module.startswith(p + ".")]
    return PACKAGE_DIRS[max(matches, key=len)] if matches else None


def is_under(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


@dataclass(frozen=True)
class Import:
    line: int
    module: str  # the module the statement loads: for `from a import b`, a.b when that is a module of ours, else a


def imports(source: str, module: str, is_package: bool) -> list[Import]:
    """Every import statement in the source, wherever it sits, with relative imports resolved."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [Import(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.split(".") if is_package else module.split(".")[:-1]
                anchor = package[:len(package) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                name = f"{base}.{alias.name}"
                found.append(Import(node.lineno, name if name in MODULES else base))
    return found


def violation(relpath: str, importer: str, target: str) -> str | None:
    """Why ``importer`` (the module in file ``relpath``) may not import ``target``; None when it may."""
    importer_room, target_room = room(importer), room(target)
    front = target_room == PACKAGE_DIRS[FRONT_PACKAGE]
    if target_room is not None and target not in MODULES:
        return f"imports {target}, which is no module of the source tree"
    if importer_room == "runtime":
        if target_room not in (None, "runtime"):
            return f"runtime imports {target}: the runtime imports only edgesdk.runtime"
        if any(is_under(target, p) for p in TORCH_PACKAGES) and not any(
                is_under(target, p) for p in TORCH_ALLOWED.get(relpath, ())):
            return f"runtime imports {target}, which imports torch: the runtime never does"
    elif importer_room == "quant":
        if target_room == "export":
            return f"quant imports {target}: the arrow runs export -> quant"
        if front:
            return f"quant imports {target} from the sdk front: the arrow runs sdk -> quant"
    elif importer_room == "export":
        if front:
            return f"export imports {target} from the sdk front: the arrow runs sdk -> export"
    elif is_under(importer, f"{FRONT_PACKAGE}.zoo") and is_under(target, f"{FRONT_PACKAGE}.train"):
        return f"the zoo imports {target}: models do not depend on their training recipes"
    return None


def violations_in(relpath: str, source: str) -> list[str]:
    module = _module_name(Path(relpath))
    found: list[str] = []
    for item in imports(source, module, relpath.endswith("__init__.py")):
        reason = violation(relpath, module, item.module)
        line = f"{relpath}:{item.line}: {reason}"
        if reason is not None and line not in found:  # `from a import b, c` is one statement, reported once
            found.append(line)
    return found


def test_the_module_map_comes_from_the_folders():
    assert MODULES["edgesdk"] == Path("sdk/__init__.py")
    assert MODULES["edgesdk.zoo.tiny_sd"] == Path("sdk/zoo/tiny_sd.py")
    assert MODULES["edgesdk.runtime.zo"] == Path("runtime/zo.py")
    assert MODULES["edgesdk.quant"] == Path("quant/__init__.py")
    assert not any("cpp" in path.parts for path in MODULES.values())  # runtime/cpp's scripts are not modules
    assert room("edgesdk.cli") == "sdk" and room("edgesdk.runtime.errors") == "runtime" and room("numpy") is None


def test_the_checker_catches_every_kind_of_import():
    """Each forbidden form is reported with its line; the allowed ones are not."""
    assert violations_in("runtime/zo.py", "import numpy\n\ndef f():\n    import torch.nn\n") == [
        "runtime/zo.py:4: runtime imports torch.nn, which imports torch: the runtime never does"]
    assert len(violations_in("runtime/zo.py", "from executorch.runtime import Runtime\n")) == 1
    assert violations_in("runtime/executorch_backend.py", "import torch\nfrom executorch.runtime import Runtime\n") \
        == []
    assert len(violations_in("runtime/zo.py", "from edgesdk.export.onnx import LargeOnnx\n")) == 1
    assert len(violations_in("runtime/zo.py", "from edgesdk import __version__\n")) == 1
    assert violations_in("runtime/zo.py", "from . import errors\nfrom .errors import EdgeSDKError\n") == []
    assert len(violations_in("quant/onnx.py", "from edgesdk.export import onnx\n")) == 1
    assert len(violations_in("quant/onnx.py", "import edgesdk.zoo.tiny_sd\n")) == 1
    assert len(violations_in("quant/onnx.py", "from .. import cli\n")) == 1  # relative, up into the front
    assert violations_in("quant/onnx.py", "from edgesdk.runtime.errors import EdgeSDKError\n") == []
    assert violations_in("export/pipeline.py", "def f():\n    from edgesdk import __version__\n") == [
        "export/pipeline.py:2: export imports edgesdk from the sdk front: the arrow runs sdk -> export"]
    assert violations_in("export/pipeline.py", "from edgesdk.quant import onnx\nimport edgesdk.runtime\n") == []
    assert len(violations_in("sdk/zoo/bnn.py", "from edgesdk import train\n")) == 1
    assert len(violations_in("sdk/zoo/bnn.py", "from ..train.common import load_weights\n")) == 1
    assert violations_in("sdk/train/bnn.py", "from edgesdk.zoo.bnn import BNN\n") == []
    assert len(violations_in("export/pipeline.py", "import edgesdk.no_such_module\n")) == 1


def test_no_import_goes_against_the_design():
    found = [v for relpath in MODULES.values() for v in violations_in(relpath.as_posix(),
                                                                      (ROOT / relpath).read_text())]
    assert not found, "imports against the design's arrows (DESIGN.md):\n" + "\n".join(found)
