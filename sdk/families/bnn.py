"""bnn: a ReSTE-trained binary CNN classifier (edgesdk.zoo.bnn), alpha folded into its batch norms and its +-1
weights stored one bit each."""

from __future__ import annotations

from typing import ClassVar

import torch

from edgesdk.export.capture import ComponentSpec
from edgesdk.families import ExportOptions, Family, Log
from edgesdk.quant.binary import BinaryConv2d
from edgesdk.quant.configs import QuantConfig
from edgesdk.runtime.errors import EdgeSDKError
from edgesdk.zoo.bnn import BNN, BNNConfig, binary_share, parameter_count


def bnn_example_images(config: BNNConfig, count: int = 8) -> torch.Tensor:
    """Real test images of the network's dataset, normalised: parity on realistic batch-norm inputs."""
    from edgesdk.data.classification import load_classification, normalise

    dataset = "digits" if config.in_channels == 1 else "shapes"
    split = load_classification(dataset, shapes_train=0, shapes_test=count)
    return torch.from_numpy(normalise(split.test_images[:count], config.mean, config.std))


def bnn_metadata(model: BNN) -> dict:
    cfg, info = model.config, getattr(model, "info", {})
    layers = [{"name": name, "shape": list(m.weight.shape), "alpha": float(m.weight.detach().abs().mean()),
               "zero_weights": int((m.weight == 0).sum())}
              for name, m in model.named_modules() if isinstance(m, BinaryConv2d)]
    return {"task": "classify", "classes": list(cfg.classes), "image_size": cfg.image_size,
            "channels": cfg.in_channels, "mean": list(cfg.mean), "std": list(cfg.std), "estimator": cfg.estimator,
            "binary_activations": cfg.binary_activations, "dataset": info.get("dataset"),
            "test_accuracy": info.get("test_accuracy"), "parameters": parameter_count(model),
            "binary_share": binary_share(model), "alpha_folded_into_batch_norm": True, "binary_layers": layers}


class BNNFamily(Family):
    """Recipe ``binary`` (default) stores the trained +-1 weights one bit each; ``fp32`` keeps them as float32, for
    comparison."""

    name: ClassVar[str] = "bnn"
    runtime_task: ClassVar[str] = "classify"
    default_recipe: ClassVar[str] = "binary"
    recipe_names: ClassVar[tuple[str, ...]] = ("binary", "fp32")

    def load(self, options: ExportOptions, config: QuantConfig, log: Log) -> BNN:
        from edgesdk.zoo.bnn import default_bnn_path, load_bnn

        path = options.weights or default_bnn_path("digits")
        model = load_bnn(path)
        if model.config.estimator == "fp":
            raise EdgeSDKError(f"{path} is a full-precision twin (estimator fp), not a binary network")
        return model

    def components(self, model: BNN, options: ExportOptions, log: Log) -> list[ComponentSpec]:
        from edgesdk.zoo.bnn import folded_for_inference

        zeros = sum(int((m.weight == 0).sum()) for m in model.modules() if isinstance(m, BinaryConv2d))
        if zeros:  # sign(0) = 0 in training; the +-1 file stores +1 (spec §8)
            log(f"note: {zeros} binary weight(s) are exactly 0 and are stored as +1")
        from edgesdk.quant.binary_op import with_binary_ops

        folded = folded_for_inference(model)
        # the binary-kernel program (recipe binary only); a 1W/32A network has no binary-activation layer for it
        binary, replaced = with_binary_ops(folded)
        return [ComponentSpec("classifier", folded, (bnn_example_images(model.config)[:1],), ["image"], ["logits"],
                              static_batch=1, max_batch=256, binary_module=binary if replaced else None)]

    def metadata(self, model: BNN) -> dict:
        return bnn_metadata(model)
