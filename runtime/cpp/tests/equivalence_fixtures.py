"""References for the C++ runtime's equivalence test (tests/test_equivalence.cpp): the Python runtime's outputs on
ExecuTorch bundles, for the same bundles, prompts, images and seeds the C++ test uses.

    python tests/equivalence_fixtures.py FIXTURES_DIR

Writes FIXTURES_DIR/equivalence/ (skips what exists; `done` marks a complete run): onestep.edge and sd.edge, the
shared test bundles "onestep" and "stable-diffusion" of tests/bundles.py (tiny-sd's and bnn's come from
cpp_fixtures.py, under FIXTURES_DIR/bundles/), the concept images, and
- sample_ddim.npy / sample_dpmpp.npy: TextToImage(tiny-sd).generate(..., return_float=True) on ExecuTorch;
- onestep.npy: OneStepTextToImage(onestep).generate(..., return_float=True);
- token.safetensors: personalize(tiny-sd, concept, "<pinkstar>", "star", 50 steps, ExecuTorch, seed 0);
- classify.json: ImageClassifier(bnn).classify(PNGs, top_k=3) probabilities;
- sd.edge: a tiny random Stable Diffusion pipeline (diffusers folder, no download) imported with export_diffusers,
  so its prompts go through the CLIP BPE tokenizer: sd_ddim.npy (DDIM images) and sd_token.safetensors (zeroth-
  order personalization) from the Python runtime.
The requests are in requests.json, so both sides read the same settings.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np

VERSION = "7"
REQUESTS = {
    "sample": {"prompts": ["a large red star on a blue background", "a small green circle"], "steps": 8, "seed": 3},
    "onestep": {"prompts": ["a large red star on a blue background", "a small yellow square"], "seed": 5},
    "personalize": {"token": "<pinkstar>", "init_word": "star", "steps": 50, "seed": 0, "checkpoint_every": 25,
                    "images": 3},
    "classify": {"top_k": 3, "count": 6},
    # imported SD: upper case, punctuation, an accent, an emoji and an unlearned <placeholder> spelled by the BPE
    "sd_sample": {"prompts": ["a photo of a red dog", "A Painting of the CAT, <Van-Gogh> style! café 🙂"],
                  "steps": 4, "seed": 3},
    "sd_personalize": {"token": "<pinkstar>", "init_word": "Star", "steps": 12, "seed": 0, "checkpoint_every": 6,
                       "captions": ["a watercolour of a {} on a beach", "a <PinkStar> in the snow"]},
}


def shared(name: str, root: Path, target: Path) -> Path:
    """``target``: the shared test bundle NAME of tests/bundles.py (exported by pytest earlier in the same
    `make test` run, or here), hard-linked file by file."""
    import shutil

    sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # the repository: tests.bundles
    from tests.bundles import bundle_root, link_bundle, shared_bundle

    if not (target / "manifest.json").exists():
        shutil.rmtree(target, ignore_errors=True)
        link_bundle(shared_bundle(name, bundle_root(root / "shared-bundles")), target)
    return target


def main(root: Path) -> None:
    from edgesdk.data.concepts import write_concept
    from edgesdk.runtime.bundle import Bundle
    from edgesdk.runtime.classify import ImageClassifier
    from edgesdk.runtime.onestep import OneStepTextToImage
    from edgesdk.runtime.personalize import default_config, personalize
    from edgesdk.runtime.pipeline import TextToImage

    out = root / "equivalence"
    if (out / "done").exists() and (out / "done").read_text() == VERSION:
        return
    out.mkdir(parents=True, exist_ok=True)
    tiny_sd, bnn = root / "bundles/tiny-sd/tiny-sd.edge", root / "bundles/bnn/bnn.edge"
    for bundle in (tiny_sd, bnn):
        if not (bundle / "manifest.json").exists():
            raise SystemExit(f"{bundle} is missing: run tests/cpp_fixtures.py first")
    onestep = shared("onestep", root, out / "onestep.edge")
    (out / "requests.json").write_text(json.dumps(REQUESTS, indent=1))

    pipe = TextToImage(tiny_sd, backend="executorch")
    sample = REQUESTS["sample"]
    for sampler, name in (("ddim", "sample_ddim.npy"), ("dpmpp-2m", "sample_dpmpp.npy")):
        images = pipe.generate(sample["prompts"], steps=sample["steps"], seed=sample["seed"], sampler=sampler,
                               return_float=True)
        np.save(out / name, images.astype(np.float32))
    one = REQUESTS["onestep"]
    images = OneStepTextToImage(onestep, backend="executorch").generate(one["prompts"], seed=one["seed"],
                                                                                     return_float=True)
    np.save(out / "onestep.npy", images.astype(np.float32))

    zo = REQUESTS["personalize"]
    concept = out / "concept"
    if not concept.exists():
        write_concept("pink-star", concept, count=zo["images"])
    np.save(out / "token_start.npy", pipe.token_table[pipe.tokenizer.index[zo["init_word"]]][None])
    token = out / "token.safetensors"
    # the shipped defaults (default_config): the C++ side runs with its own defaults, which must be the same
    personalize(tiny_sd, concept, zo["token"], zo["init_word"], token, steps=zo["steps"], backend="executorch",
                config=dataclasses.replace(default_config(Bundle.open(tiny_sd)), seed=zo["seed"],
                                           checkpoint_every=zo["checkpoint_every"]), overwrite=True)

    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    pictures = out / "digits"
    pictures.mkdir(exist_ok=True)
    files = []
    for i in range(REQUESTS["classify"]["count"]):
        path = pictures / f"digit-{i}-{digits.target[i]}.png"
        Image.fromarray((digits.images[i] * 16).clip(0, 255).astype(np.uint8)).save(path)  # 8x8, resized by both
        files.append(path)
    predictions = ImageClassifier(bnn, backend="executorch").classify(files, top_k=3)
    (out / "classify.json").write_text(json.dumps(
        [{"source": p.source, "top": [[name, probability] for name, probability in p.top], "notes": p.notes}
         for p in predictions], indent=1))

    sd = shared("stable-diffusion", root, out / "sd.edge")  # a tiny random SD pipeline through export_diffusers
    sd_pipe = TextToImage(sd, backend="executorch")
    assert type(sd_pipe.tokenizer).__name__ == "ClipTokenizer"
    request = REQUESTS["sd_sample"]
    images = sd_pipe.generate(request["prompts"], steps=request["steps"], seed=request["seed"], sampler="ddim",
                              return_float=True)
    np.save(out / "sd_ddim.npy", images.astype(np.float32))
    zo = REQUESTS["sd_personalize"]
    np.save(out / "sd_token_start.npy",
            sd_pipe.token_table[sd_pipe.tokenizer.index[zo["init_word"].lower()]][None])
    personalize(sd, concept, zo["token"], zo["init_word"], out / "sd_token.safetensors", steps=zo["steps"],
                backend="executorch", config=dataclasses.replace(default_config(Bundle.open(sd)), seed=zo["seed"],
                                                                 checkpoint_every=zo["checkpoint_every"]),
                overwrite=True, captions=zo["captions"])
    (out / "done").write_text(VERSION)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    main(Path(sys.argv[1]))
