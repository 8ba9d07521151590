"""Stage 3: write a bundle directory. Everything goes into a temporary sibling directory that is renamed
into place at the end, so an interrupted export never leaves a half bundle (nor destroys an old one)."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from pathlib import Path

import numpy as np

from edgesdk.quant.onnx_files import LargeOnnx
from edgesdk.runtime.errors import EdgeSDKError
from edgesdk.runtime.files import publish_folder, temp_folder_for

FORMAT = "edgesdk-bundle"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            digest.update(block)
    return digest.hexdigest()


FORMAT_VERSION = 1


class BundleWriter:
    def __init__(self, destination: Path, overwrite: bool = False) -> None:
        self.destination = destination.resolve()
        if self.destination.exists() and not overwrite:
            raise EdgeSDKError(f"{destination} already exists; pass --overwrite to replace it")
        self.destination.parent.mkdir(parents=True, exist_ok=True)
        # created with the umask's mode (mkdtemp would make it 0700, and the bundle unreadable to anyone else)
        self.staging = temp_folder_for(self.destination)
        self.checksums: dict[str, str] = {}

    def add_bytes(self, relpath: str, data: bytes) -> str:
        target = self.staging / relpath
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        self.checksums[relpath] = hashlib.sha256(data).hexdigest()
        return relpath

    def add_onnx(self, relpath: str, model: bytes | LargeOnnx) -> str:
        """An ONNX model; one with external data moves in as the graph plus ``NAME.onnx.data`` beside it (the
        name the graph refers to), both checksummed. The temporary folder it came from is removed."""
        if not isinstance(model, LargeOnnx):
            return self.add_bytes(relpath, model)
        target = self.staging / relpath
        target.parent.mkdir(parents=True, exist_ok=True)
        data_relpath = relpath + ".data"
        if model.data_path.name != Path(data_relpath).name:
            raise EdgeSDKError(f"internal: external data {model.data_path.name} would not match {relpath}")
        for source, rel in ((model.path, relpath), (model.data_path, data_relpath)):
            shutil.move(str(source), str(self.staging / rel))
            self.checksums[rel] = file_sha256(self.staging / rel)
        shutil.rmtree(model.path.parent, ignore_errors=True)
        return relpath

    def add_array(self, relpath: str, array: np.ndarray) -> str:
        buffer = io.BytesIO()
        np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
        return self.add_bytes(relpath, buffer.getvalue())

    def add_json(self, relpath: str, value: object) -> str:
        return self.add_bytes(relpath, (json.dumps(value, indent=2) + "\n").encode())

    def write_manifest(self, manifest: dict) -> None:
        manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, **manifest, "files": dict(self.checksums)}
        (self.staging / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")

    @property
    def manifest_path(self) -> Path:
        return self.staging / "manifest.json"

    def commit(self) -> Path:
        """Move the finished bundle into place (replacing an old one only now, at the very end)."""
        publish_folder(self.staging, self.destination)
        return self.destination

    def abort(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)
