"""The valid inputs the fuzz cases start from, made once per run under the run's work folder.

Base bundles: `synthetic` (edgesdk.runtime.testing's micro text-to-image ONNX bundle), `viws` (a micro video
restorer written here as one ONNX graph: the centre frame of the window, unchanged) and private copies of the
shared full-size test bundles (tests/bundles.py: tiny-sd, bnn-digits, onestep), which stay read-only: a case
mutates its own copy, whose large model files are hard links to the private copy, never to the shared folder.
A case that writes through such a link shows as a modified input (its size or mtime changes).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

LINK_ABOVE_BYTES = 1 << 20  # files larger than this are hard-linked into a case's bundle, smaller ones copied
SHARED = ("tiny-sd", "bnn-digits", "onestep")


class Bases:
    def __init__(self, work: Path, shared_root: Path | None, cpp_binary: Path | None = None) -> None:
        self.root = Path(work) / "bases"
        self.root.mkdir(parents=True, exist_ok=True)
        self.shared_root = shared_root
        self.cpp_binary = cpp_binary
        self._made: dict[str, Path] = {}
        self._stamps: dict[str, dict[str, tuple[int, int, int]]] = {}
        self._video: bytes | None = None
        self._big_frame: bytes | None = None

    # ---- bundles ----

    def bundle(self, name: str) -> Path:
        if name not in self._made:
            target = self.root / f"{name}.edge"
            if name == "synthetic":
                from edgesdk.runtime.testing import write_synthetic_bundle

                write_synthetic_bundle(target)
            elif name == "viws":
                write_micro_restorer(target)
            elif name in SHARED:
                from tests.bundles import shared_bundle

                shutil.copytree(shared_bundle(name, self.shared_root), target)
            else:
                raise KeyError(f"no base bundle {name!r}")
            self._made[name] = target
            self._stamps[name] = _stamps(target)
        return self._made[name]

    def heal(self) -> list[str]:
        """Rebuild every base bundle a case wrote into through a hard link (that case shows a modified input), so
        that the cases after it start from intact files; returns the names rebuilt."""
        rebuilt = []
        for name, target in list(self._made.items()):
            if _stamps(target) != self._stamps[name]:
                shutil.rmtree(target)
                del self._made[name]
                self.bundle(name)
                rebuilt.append(name)
        return rebuilt

    def copy(self, name: str, dest: Path) -> Path:
        """A case's own copy of base bundle `name`: small files copied, large ones hard-linked."""
        def place(src: str, dst: str) -> None:
            if os.path.getsize(src) > LINK_ABOVE_BYTES:
                try:
                    os.link(src, dst)
                    return
                except OSError:
                    pass
            shutil.copy2(src, dst)

        shutil.copytree(self.bundle(name), dest, copy_function=place)
        return dest

    # ---- personalization: images, a learned token and its checkpoint, made by the CLI itself ----

    def personalization(self, cli: str, case_dir: Path, checkpoint: bool = True, bundle: bool = True) -> None:
        """Into `case_dir`: b.edge (unless not `bundle`), imgs/ and, with `checkpoint`, the token and checkpoint a
        2-step run of tests.fuzz.cases.personalize_argv left."""
        made = self._personalization(cli)
        if bundle:
            self.copy("synthetic" if cli == "python" else "tiny-sd", case_dir / "b.edge")
        shutil.copytree(made / "imgs", case_dir / "imgs")
        if checkpoint:
            for path in made.iterdir():
                if path.name.startswith("tok.safetensors"):
                    shutil.copy2(path, case_dir / path.name)

    def _personalization(self, cli: str) -> Path:
        from tests.fuzz.cases import personalize_argv, valid_png

        folder = self.root / f"personalize-{cli}"
        if (folder / "tok.safetensors").exists():
            return folder
        folder.mkdir(exist_ok=True)
        (folder / "imgs").mkdir(exist_ok=True)
        for i in range(2):
            (folder / "imgs" / f"{i}.png").write_bytes(valid_png(16, 16, seed=i))
        self.copy("synthetic" if cli == "python" else "tiny-sd", folder / "b.edge")
        argv = personalize_argv(cli, steps=2)
        command = [sys.executable, "-m", "edgesdk.cli", *argv] if cli == "python" else [str(self.cpp_binary), *argv]
        with tempfile.TemporaryDirectory() as scratch:
            env = {**os.environ, "HOME": scratch, "TMPDIR": scratch, "OMP_NUM_THREADS": "1"}
            done = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            raise RuntimeError(f"the base personalization run failed: {done.stderr.strip()[-400:]}")
        shutil.rmtree(folder / "b.edge")
        return folder

    # ---- media ----

    def video_bytes(self) -> bytes:
        """A valid 6-frame 16x16 .mp4, written by the runtime's own writer."""
        if self._video is None:
            from edgesdk.runtime.video import write_frames

            path = self.root / "clip.mp4"
            if not path.exists():
                rng = np.random.default_rng(0)
                write_frames(path, [rng.integers(0, 256, (16, 16, 3), dtype=np.uint8) for _ in range(6)], fps=10)
            self._video = path.read_bytes()
        return self._video

    def big_frame(self) -> bytes:
        """A real 4000x4000 PNG (small on disk: one colour)."""
        if self._big_frame is None:
            import io

            from PIL import Image

            buffer = io.BytesIO()
            Image.new("RGB", (4000, 4000), (40, 90, 200)).save(buffer, format="PNG")
            self._big_frame = buffer.getvalue()
        return self._big_frame


def _stamps(root: Path) -> dict[str, tuple[int, int, int]]:
    """What a write through a hard link changes, for the files Bases.copy links."""
    stamps = {}
    for path in root.rglob("*"):
        info = path.lstat()
        if path.is_file() and info.st_size > LINK_ABOVE_BYTES:
            stamps[path.relative_to(root).as_posix()] = (info.st_size, info.st_mtime_ns, info.st_ino)
    return stamps


def write_micro_restorer(root: Path) -> Path:
    """A `viws`-contract bundle ((batch, 5, 3, 64, 64) -> (batch, 3, 64, 64)) on ONNX Runtime: the window's centre
    frame, unchanged. Torch-free, so the fuzz suite builds it in milliseconds."""
    import json

    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from edgesdk.runtime.testing import finalize_bundle

    frames, tile = 5, 64
    graph = helper.make_graph(
        [helper.make_node("Gather", ["frames", "centre"], ["restored"], axis=1)], "restorer",
        [helper.make_tensor_value_info("frames", TensorProto.FLOAT, ["batch", frames, 3, tile, tile])],
        [helper.make_tensor_value_info("restored", TensorProto.FLOAT, ["batch", 3, tile, tile])],
        [numpy_helper.from_array(np.array(frames // 2, dtype=np.int64), "centre")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    (root / "onnx").mkdir(parents=True)
    onnx.save(model, str(root / "onnx/restorer.onnx"))
    spec = {"inputs": [{"name": "frames", "dtype": "float32", "shape": ["batch", frames, 3, tile, tile]}],
            "outputs": [{"name": "restored", "dtype": "float32", "shape": ["batch", 3, tile, tile]}],
            "dynamic_dims": {"batch": {"min": 1, "max": 8}}, "files": {"onnx": "onnx/restorer.onnx"},
            "static_shapes": {}, "parity": {}, "delegation": {}}
    manifest = {"format": "edgesdk-bundle", "format_version": 1, "family": "viws", "task": "restore",
                "created_by": "tests", "quantization": {"recipe": "fp32"},
                "model": {"task": "restore", "frames": frames, "tile": tile, "tile_overlap": 16,
                          "weathers": ["rain", "haze", "snow"]},
                "assets": {}, "components": {"restorer": spec}}
    finalize_bundle(root, manifest)
    json.loads((root / "manifest.json").read_text())
    return root
