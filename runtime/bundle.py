"""Open and verify a bundle directory (`NAME.edge/`, see docs/bundle-format.md).

Everything is checked once, at open time, so later code can trust the manifest: a bundle that opens has a manifest
the schema accepts (docs/bundle-schema.json, runtime/schema.py), is complete, untampered and self-contained, and its
assets agree with its model section. Nothing is unpickled.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from edgesdk.runtime import schema
from edgesdk.runtime.errors import EdgeSDKError

FORMAT = "edgesdk-bundle"
KNOWN_FORMAT_VERSIONS = (1,)
_HASH_CHUNK = 1 << 20  # 1 MiB: bounded memory for multi-GB weights on a phone


# the task of bundles that do not name one (written before the manifest's "task" field), by family
LEGACY_TASKS = {"tiny-sd": "text-to-image", "stable-diffusion": "text-to-image", "onestep": "one-step-text-to-image",
                "bnn": "classify", "viws": "restore"}
# families whose task, where the manifest names none, follows from the model section (test bundles, user models)
INFERRED_TASK_FAMILIES = ("synthetic", "custom")


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of a component. Dynamic dims are strings ("batch"), fixed dims integers."""

    name: str
    dtype: str
    shape: tuple[int | str, ...]


@dataclass(frozen=True)
class ComponentInfo:
    """One exported network (text_encoder, unet, ...) and its files per target backend."""

    name: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    files: dict[str, str]
    static_shapes: dict[str, dict[str, int]] = field(default_factory=dict)
    parity: dict[str, Any] = field(default_factory=dict)
    delegation: dict[str, Any] = field(default_factory=dict)
    dynamic_dims: dict[str, Any] = field(default_factory=dict)
    fp32_weight_bytes: int | None = None  # what the weights take in fp32 (recorded at export), for memory checks
    # backend -> the file whose binary convolutions run on edgesdk's bit-packed kernel, and what it needs ({"file",
    # "op", "binary_layers", "packed_weight_bytes", ...}; checked at open; docs/binary-kernel.md)
    binary_kernel: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def input_names(self) -> list[str]:
        return [spec.name for spec in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [spec.name for spec in self.outputs]


class Bundle:
    """A verified bundle. Use `Bundle.open(path)`; the constructor trusts its arguments."""

    def __init__(self, root: Path, manifest: dict[str, Any]) -> None:
        self.root = root
        self.manifest = manifest
        self.components: dict[str, ComponentInfo] = {
            name: _component(name, entry) for name, entry in manifest["components"].items()
        }

    @classmethod
    def open(cls, path: str | Path, verify_checksums: bool = True) -> Bundle:
        """Read and verify `path`. `verify_checksums=False` skips hashing (startup benchmarks only)."""
        root = Path(path)
        if not root.is_dir():
            problem = "is not a directory" if root.exists() else "does not exist"
            raise EdgeSDKError(f"bundle directory {str(root)!r} {problem}; pass the NAME.edge folder "
                               "that `edgesdk export` wrote")
        manifest = _read_manifest(root)
        _check_format(manifest)
        schema.validate_manifest(manifest)  # types, required keys and bounds, before anything else is trusted
        _check_structure(root, manifest)
        schema.check_consistency(manifest)
        _check_task(manifest)
        # assets before checksums: their headers and sizes are checked in milliseconds, while hashing a multi-GB
        # file that is not even an .npy takes seconds (the checks read nothing they trust)
        schema.check_assets(root, manifest)
        if verify_checksums:
            for rel, expected in manifest["files"].items():
                if file_sha256(root / rel) != str(expected).lower():
                    raise EdgeSDKError(f"bundle file {rel!r}: checksum mismatch: the file was changed or "
                                       "corrupted; re-export the bundle")
        return cls(root.resolve(), manifest)

    @property
    def family(self) -> str:
        return str(self.manifest.get("family", ""))

    @property
    def task(self) -> str:
        """The runtime task that opens this bundle (``edgesdk.runtime.tasks``): the manifest's ``task``; for a bundle
        that does not say (written before the field existed, or by hand), the model section's ``task``, else its
        family's, else text-to-image for a latent model, else "run" (components only)."""
        for task in (self.manifest.get("task"), self.model.get("task"), LEGACY_TASKS.get(self.family)):
            if isinstance(task, str) and task:
                return task
        return "text-to-image" if "latent_channels" in self.model else "run"

    @property
    def model(self) -> dict[str, Any]:
        return dict(self.manifest.get("model", {}))

    def path_of(self, relpath: str) -> Path:
        """Absolute path of a file the manifest names (already checked to stay inside the bundle)."""
        return self.root / relpath

    def component(self, name: str) -> ComponentInfo:
        if name not in self.components:
            raise EdgeSDKError(f"bundle {self.root.name!r} has no component {name!r}; "
                               f"it has: {', '.join(sorted(self.components))}")
        return self.components[name]

    def _asset(self, name: str) -> Path:
        assets = self.manifest.get("assets", {})
        if name not in assets:
            raise EdgeSDKError(f"bundle {self.root.name!r} has no asset {name!r}; "
                               f"it has: {', '.join(sorted(assets)) or 'none'}")
        return self.path_of(assets[name])

    def asset_array(self, name: str, mapped: bool = False) -> np.ndarray:
        """An .npy asset. ``mapped``: memory-mapped read-only, so only the rows a caller reads become resident
        (SD-1.5's 49408 x 768 token table is 152 MB, of which a prompt reads a few rows)."""
        # allow_pickle=False: an .npy from an untrusted bundle must never run code
        return np.load(self._asset(name), allow_pickle=False, mmap_mode="r" if mapped else None)

    def asset_json(self, name: str) -> Any:
        """A JSON asset, parsed; one that is not JSON is a refusal naming it (its size was bounded at open)."""
        path = self._asset(name)
        try:
            with open(path, encoding="utf-8") as f:
                return json.load(f)
        except json.JSONDecodeError as e:
            problem = f"{e.msg} at line {e.lineno} column {e.colno}"
        except UnicodeDecodeError:
            problem = "not UTF-8 text"
        except RecursionError:
            problem = "nested too deeply"
        except OSError as e:
            raise EdgeSDKError(f"cannot read bundle asset {name!r}: {e.strerror or e}") from None
        raise EdgeSDKError(f"bundle asset {name!r} ({self.manifest['assets'][name]!r}) is not JSON ({problem}); "
                           "re-export the bundle")

    def targets(self) -> list[str]:
        """Backends that every component has a file for (what this bundle can run on)."""
        per_component = [set(info.files) for info in self.components.values()]
        if not per_component:
            return []
        return sorted(set.intersection(*per_component))

    def file_sizes(self) -> dict[str, int]:
        """Bytes per file listed in the manifest, e.g. for `edgesdk inspect`."""
        return {rel: (self.root / rel).stat().st_size for rel in self.manifest["files"]}

    def __repr__(self) -> str:
        return f"Bundle({str(self.root)!r}, family={self.family!r}, components={sorted(self.components)})"


def open_bundle(path: str | Path, verify_checksums: bool = True) -> Bundle:
    return Bundle.open(path, verify_checksums=verify_checksums)


def _read_manifest(root: Path) -> dict[str, Any]:
    manifest_path = root / "manifest.json"
    if not manifest_path.exists() and not manifest_path.is_symlink():
        raise EdgeSDKError(f"{str(root)!r} has no manifest.json, so it is not a bundle; "
                           "pass the NAME.edge folder that `edgesdk export` wrote")
    what = repr(str(manifest_path))
    return schema.parse_manifest(schema.read_bounded(manifest_path, schema.MAX_MANIFEST_BYTES, what), what)


def _check_format(manifest: dict[str, Any]) -> None:
    """Format and version first: a newer bundle gets "upgrade edgesdk", not a schema complaint."""
    if manifest.get("format") != FORMAT:
        raise EdgeSDKError(f"manifest format is {schema.shown(manifest.get('format'))}, expected {FORMAT!r}; "
                           "this folder was not written by `edgesdk export`")
    version = manifest.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version not in KNOWN_FORMAT_VERSIONS:
        known = ", ".join(str(v) for v in KNOWN_FORMAT_VERSIONS)
        raise EdgeSDKError(f"bundle format_version {schema.shown(version)} is not supported: this runtime reads "
                           f"version {known}; upgrade edgesdk or re-export the bundle with this version")


def _check_task(manifest: dict[str, Any]) -> None:
    """A bundle must say what it does: a task in the manifest or its model section, or a family whose task is known
    (see Bundle.task). A family this runtime has never heard of, with no task, would otherwise be guessed at from
    the model section and run as whatever the guess says."""
    model = manifest.get("model", {})
    if manifest.get("task") or model.get("task"):
        return
    family = manifest.get("family")
    if family is None or family in LEGACY_TASKS or family in INFERRED_TASK_FAMILIES:
        return
    known = ", ".join(sorted([*LEGACY_TASKS, *INFERRED_TASK_FAMILIES]))
    raise schema.refuse("family", f"{schema.shown(family)} is not a family this runtime knows ({known}) and the "
                                  "manifest names no task (\"task\") that says what the bundle does")


def _check_structure(root: Path, manifest: dict[str, Any]) -> None:
    """Paths stay inside the bundle, every file named is listed in `files`, and every listed file is a regular file
    (a FIFO or device would block or never end when hashed). Types were checked by the schema."""
    listed: dict[str, Any] = manifest["files"]
    for rel in listed:
        _check_inside(root, rel)
    referenced = list(manifest.get("assets", {}).values())
    for name, entry in manifest["components"].items():
        referenced += list(entry["files"].values())
        referenced += [kernel["file"] for kernel in binary_kernels(name, entry).values()]
    for rel in referenced:
        _check_inside(root, rel)
        if rel not in listed:
            raise EdgeSDKError(f"bundle file {rel!r} is not listed in the manifest's 'files' checksums; "
                               "re-export the bundle")
    for rel in listed:
        try:
            mode = os.stat(root / rel).st_mode  # follows a link, which _check_inside kept inside the bundle
        except OSError:
            raise EdgeSDKError(f"bundle file {rel!r} is missing from {str(root)!r}; copy the whole bundle folder "
                               "or re-export it") from None
        if not stat.S_ISREG(mode):
            raise EdgeSDKError(f"bundle file {rel!r} is not a regular file (a folder, FIFO or device); "
                               "the bundle is refused")


def binary_kernels(name: str, entry: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A component's ``binary_kernel`` (backend -> {"file": path, "op": name, ...}), each checked for the two keys a
    runtime reads (the schema says only that the whole is an object)."""
    kernels = entry.get("binary_kernel", {})
    for backend, kernel in kernels.items():
        if not (isinstance(kernel, dict) and isinstance(kernel.get("file"), str) and isinstance(kernel.get("op"), str)):
            raise schema.refuse(f"components.{name}.binary_kernel.{backend}",
                                f"{schema.shown(kernel)} is not an object with a string 'file' and 'op'")
    return kernels


def _check_inside(root: Path, rel: Any) -> None:
    """Refuse absolute paths, `..` and symlinks that point out: a bundle must not read files elsewhere."""
    pure = PurePosixPath(str(rel))
    escapes = not isinstance(rel, str) or rel == "" or pure.is_absolute() or "\\" in rel or ".." in pure.parts
    if not escapes:
        try:
            escapes = not (root / rel).resolve().is_relative_to(root.resolve())
        except (OSError, RuntimeError):  # a link loop
            escapes = True
    if escapes:
        raise EdgeSDKError(f"bundle path {rel!r} leaves the bundle (paths must be relative, without '..'); "
                           "the bundle is refused")


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _specs(entries: list[Any], component: str) -> list[TensorSpec]:
    specs = []
    for entry in entries:
        if not isinstance(entry, dict) or "name" not in entry:
            raise EdgeSDKError(f"manifest component {component!r} has a malformed input/output entry {entry!r}; "
                               "re-export the bundle")
        specs.append(TensorSpec(str(entry["name"]), str(entry.get("dtype", "float32")),
                                tuple(entry.get("shape", ()))))
    return specs


def _component(name: str, entry: dict[str, Any]) -> ComponentInfo:
    return ComponentInfo(
        name=name,
        inputs=_specs(entry.get("inputs", []), name),
        outputs=_specs(entry.get("outputs", []), name),
        files=dict(entry.get("files", {})),
        static_shapes=dict(entry.get("static_shapes", {})),
        parity=dict(entry.get("parity", {})),
        delegation=dict(entry.get("delegation", {})),
        dynamic_dims=dict(entry.get("dynamic_dims", {})),
        fp32_weight_bytes=entry.get("fp32_weight_bytes"),
        binary_kernel=binary_kernels(name, entry),
    )
