"""Tiny synthetic bundles built from hand-written ONNX graphs: tests and demos of the runtime without torch.

The networks are stand-ins (the "unet" predicts 0.1 * latent plus a text- and time-dependent shift) but the
layout, manifest and checksums follow docs/bundle-format.md exactly, so every runtime code path runs.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

VOCABULARY = ["<pad>", "<bos>", "<eos>", "a", "red", "blue", "green", "circle", "square", "cat", "on", "background"]
MODEL = {"image_size": 8, "image_channels": 3, "latent_channels": 4, "latent_size": 4, "max_tokens": 8,
         "text_width": 8, "train_timesteps": 1000, "prediction": "epsilon", "guidance_scale": 4.0}


def finalize_bundle(root: Path, manifest: dict[str, Any]) -> None:
    """Checksum every file under `root` but manifest.json into `manifest["files"]` and write manifest.json."""
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.name != "manifest.json")
    manifest["files"] = {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}
    (root / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")


def _save(graph: onnx.GraphProto, path: Path) -> None:
    # opset 17 / IR 8: old enough for any onnxruntime this project supports
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))


def _value(name: str, shape: list[int | str]) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def _const(name: str, array: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(array, dtype=np.float32), name)


def _graphs(batch: int | str, rng: np.random.Generator) -> dict[str, onnx.GraphProto]:
    m = MODEL
    tokens, width, ch, lat, size = m["max_tokens"], m["text_width"], m["latent_channels"], m["latent_size"], \
        m["image_size"]
    text_encoder = helper.make_graph(
        [helper.make_node("MatMul", ["input_embeddings", "w"], ["h"]), helper.make_node("Tanh", ["h"], ["text"])],
        "text_encoder", [_value("input_embeddings", [batch, tokens, width])], [_value("text", [batch, tokens, width])],
        [_const("w", rng.standard_normal((width, width)) / np.sqrt(width))])
    unet = helper.make_graph(
        [helper.make_node("ReduceMean", ["text"], ["text_mean"], axes=[1, 2], keepdims=0),
         helper.make_node("Mul", ["timestep", "time_scale"], ["t_shift"]),
         helper.make_node("Add", ["text_mean", "t_shift"], ["shift_flat"]),
         helper.make_node("Reshape", ["shift_flat", "shift_shape"], ["shift"]),
         helper.make_node("Mul", ["latent", "latent_scale"], ["scaled"]),
         helper.make_node("Add", ["scaled", "shift"], ["noise"])],
        "unet", [_value("latent", [batch, ch, lat, lat]), _value("timestep", [batch]),
                 _value("text", [batch, tokens, width])],
        [_value("noise", [batch, ch, lat, lat])],
        [_const("time_scale", 1e-4), _const("latent_scale", 0.1),
         numpy_helper.from_array(np.array([-1, 1, 1, 1], dtype=np.int64), "shift_shape")])
    up = size // lat
    vae_decoder = helper.make_graph(
        [helper.make_node("Conv", ["latent", "w"], ["h"]),
         helper.make_node("DepthToSpace", ["h"], ["d"], blocksize=up, mode="DCR"),
         helper.make_node("Tanh", ["d"], ["image"])],
        "vae_decoder", [_value("latent", [batch, ch, lat, lat])], [_value("image", [batch, 3, size, size])],
        [_const("w", rng.standard_normal((3 * up * up, ch, 1, 1)))])
    vae_encoder = helper.make_graph(
        [helper.make_node("SpaceToDepth", ["image"], ["s"], blocksize=up),
         helper.make_node("Conv", ["s", "w"], ["latent"])],
        "vae_encoder", [_value("image", [batch, 3, size, size])], [_value("latent", [batch, ch, lat, lat])],
        [_const("w", rng.standard_normal((ch, 3 * up * up, 1, 1)) / (3 * up))])
    return {"text_encoder": text_encoder, "unet": unet, "vae_decoder": vae_decoder, "vae_encoder": vae_encoder}


def _specs(graph: onnx.GraphProto, values: Any) -> list[dict[str, Any]]:
    return [{"name": v.name, "dtype": "float32",
             "shape": ["batch"] + [d.dim_value for d in v.type.tensor_type.shape.dim[1:]]} for v in values]


def write_synthetic_bundle(root: str | Path, static_batch: int | None = None, seed: int = 0) -> Path:
    """Write a complete tiny text-to-image bundle. `static_batch` exports fixed-batch ONNX graphs and
    declares `static_shapes: {"onnx": {"batch": static_batch}}`, as a TensorRT target would."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    (root / "assets").mkdir(parents=True, exist_ok=True)
    np.save(root / "assets/token_embedding.npy",
            rng.standard_normal((len(VOCABULARY), MODEL["text_width"])).astype(np.float32))
    betas = np.linspace(1e-4, 0.02, MODEL["train_timesteps"], dtype=np.float64)  # DDPM's linear schedule
    np.save(root / "assets/alphas_cumprod.npy", np.cumprod(1.0 - betas))
    vocabulary = {"tokens": VOCABULARY, "pad": "<pad>", "bos": "<bos>", "eos": "<eos>",
                  "max_tokens": MODEL["max_tokens"], "lowercase": True}
    (root / "assets/vocabulary.json").write_text(json.dumps(vocabulary), encoding="utf-8")
    components: dict[str, Any] = {}
    for name, graph in _graphs(static_batch or "batch", rng).items():
        _save(graph, root / f"onnx/{name}.onnx")
        components[name] = {
            "inputs": _specs(graph, graph.input), "outputs": _specs(graph, graph.output),
            "dynamic_dims": {"batch": {"min": 1, "max": 8}}, "files": {"onnx": f"onnx/{name}.onnx"},
            "static_shapes": {"onnx": {"batch": static_batch}} if static_batch else {},
            "parity": {}, "delegation": {},
        }
    manifest = {"format": "edgesdk-bundle", "format_version": 1, "family": "synthetic", "created_by": "tests",
                "quantization": {"recipe": "fp32"}, "model": dict(MODEL),
                "assets": {"token_embedding": "assets/token_embedding.npy",
                           "vocabulary": "assets/vocabulary.json", "alphas_cumprod": "assets/alphas_cumprod.npy"},
                "components": components}
    finalize_bundle(root, manifest)
    return root
