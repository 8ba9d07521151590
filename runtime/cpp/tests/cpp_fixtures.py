"""Fixtures for the C++ runtime tests: files written by numpy, PIL and the Python runtime, which the C++ tests
read and must reproduce.

    python cpp_fixtures.py OUT_DIR

ctest runs this first (the `cpp_fixtures` test). Each step writes one folder under OUT_DIR, first under a temporary
name, then renamed: a folder that exists is complete, and is skipped on the next run. The bundles in BUNDLES are
the shared test bundles of tests/bundles.py: exported by pytest earlier in the same `make test` run, or by this
script when run alone (a few minutes); later runs take seconds.

    OUT_DIR/npy/          arrays of each dtype and header version, bad files, expected.json
    OUT_DIR/png/          PNGs of every colour type (PIL's and hand-written: 16-bit, low bit depths, Adam7)
    OUT_DIR/image/        PIL's convert / resize / center_crop results, runtime.image.grid
    OUT_DIR/bundles/      the shared test bundles (hard links) + small synthetic bad ones
    OUT_DIR/tokenizer/    the Python Tokenizer's words, ids, embeddings and errors per prompt
    OUT_DIR/clip_tokenizer/  the Python ClipTokenizer's ids, errors, words, embeddings per prompt and asset, and
                          tokenizers' / Python's Unicode answers on every code point (clip_fixtures.py)
    OUT_DIR/onebit/       runtime.onebit containers
    OUT_DIR/session/      inputs and outputs of the Python ExecuTorch session per bundle, component and batch
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import sys
import zlib
from collections.abc import Callable
from pathlib import Path

import clip_fixtures
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # the repository: tests.bundles
from tests.bundles import bundle_root, link_bundle  # noqa: E402
from tests.bundles import shared_bundle as shared_test_bundle  # noqa: E402

# The bundles the tests read: fixture name -> the shared test bundle (tests/bundles.py) it is. They are exported once
# per test run for pytest and ctest together: under `make test`, ctest finds them in $EDGESDK_TEST_BUNDLES, already
# exported by pytest; run alone, this script exports them under OUT_DIR/shared-bundles. The session step records
# reference outputs for every component of every bundle listed here.
BUNDLES: dict[str, str] = {
    "tiny-sd": "tiny-sd",  # the shipped tiny-sd, fp32 (ExecuTorch, ONNX and TensorRT-ready files)
    "bnn": "bnn-digits",  # a binary classifier: its program is a .pte.1bit container
}
SESSION_BATCHES = (1, 2, 3, 5)  # tiny-sd: 2 is the static batch, 3 has its own method, 1 and 5 are padded


def step(out: Path, name: str, build: Callable[[Path], None]) -> None:
    """Run `build` into OUT/name.tmp and rename it to OUT/name, unless OUT/name exists already."""
    final = out / name
    if final.exists():
        print(f"{name}: present")
        return
    temp = out / f"{name}.tmp"
    shutil.rmtree(temp, ignore_errors=True)
    temp.mkdir(parents=True)
    build(temp)
    temp.rename(final)
    print(f"{name}: written")


# ---------------------------------------------------------------- npy


def build_npy(d: Path) -> None:
    rng = np.random.default_rng(1)
    arrays = {
        "f4": rng.standard_normal((2, 3)).astype("<f4"),
        "f8": rng.standard_normal(5).astype("<f8"),
        "i8": np.arange(-4, 4, dtype="<i8").reshape(2, 2, 2) * 1_000_000_007,
        "i4": np.array([-7, 0, 2**31 - 1], dtype="<i4"),
        "u1": np.arange(16, dtype=np.uint8).reshape(4, 4) * 16,
        "u4": np.array([0, 2**32 - 1], dtype="<u4"),
        "scalar": np.array(3.5, dtype="<f4"),
        "empty": np.zeros((0, 3), dtype="<f4"),
    }
    expected = {}
    for name, array in arrays.items():
        np.save(d / f"{name}.npy", array, allow_pickle=False)
        expected[name] = {"dtype": array.dtype.str, "shape": list(array.shape),
                          "values": [float(v) for v in array.ravel()]}
    for version in ((2, 0), (3, 0)):
        with open(d / f"v{version[0]}.npy", "wb") as f:
            np.lib.format.write_array(f, arrays["f4"], version=version)
    (d / "expected.json").write_text(json.dumps(expected))
    # files the reader must refuse
    np.save(d / "fortran.npy", np.asfortranarray(np.arange(6, dtype="<f4").reshape(2, 3)))
    np.save(d / "bigendian.npy", np.arange(3, dtype=">f4"))
    np.save(d / "object.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    np.save(d / "bool.npy", np.array([True, False]))
    (d / "truncated.npy").write_bytes((d / "f8.npy").read_bytes()[:-3])
    (d / "notnpy.npy").write_bytes(b"PK\x03\x04 this is a zip file")


# ---------------------------------------------------------------- PNG

ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))


def png_bytes(samples: np.ndarray, color_type: int, bit_depth: int, interlace: bool = False,
              palette: np.ndarray | None = None, alpha: np.ndarray | None = None) -> bytes:
    """A PNG written by hand (PIL writes neither 16-bit colour nor Adam7): samples are (H, W, C) integers as stored.
    Rows use filter types 0-4 in turn, so the reader's every filter is exercised."""
    height, width, _ = samples.shape

    def pack_row(row: np.ndarray) -> bytes:
        flat = row.reshape(-1)
        if bit_depth == 16:
            return flat.astype(">u2").tobytes()
        if bit_depth == 8:
            return flat.astype(np.uint8).tobytes()
        per_byte = 8 // bit_depth
        padded = np.concatenate([flat, np.zeros((-len(flat)) % per_byte, dtype=flat.dtype)]).astype(np.uint8)
        out = np.zeros(len(padded) // per_byte, dtype=np.uint8)
        for i in range(per_byte):
            out |= padded[i::per_byte] << (8 - bit_depth * (i + 1))
        return out.tobytes()

    bpp = max(1, samples.shape[2] * bit_depth // 8)

    def filtered(rows: list[bytes]) -> bytes:
        out, previous = bytearray(), bytes(len(rows[0]))
        for n, row in enumerate(rows):
            kind = n % 5
            line = bytearray()
            for i, value in enumerate(row):
                a = row[i - bpp] if i >= bpp else 0
                b = previous[i]
                c = previous[i - bpp] if i >= bpp else 0
                if kind == 0:
                    pred = 0
                elif kind == 1:
                    pred = a
                elif kind == 2:
                    pred = b
                elif kind == 3:
                    pred = (a + b) >> 1
                else:
                    p = a + b - c
                    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                    pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                line.append((value - pred) & 0xFF)
            out += bytes([kind]) + line
            previous = row
        return bytes(out)

    raw = b""
    for x0, y0, dx, dy in (ADAM7 if interlace else ((0, 0, 1, 1),)):
        sub = samples[y0::dy, x0::dx]
        if sub.size:
            raw += filtered([pack_row(r) for r in sub])

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, int(interlace))
    body = chunk(b"IHDR", header)
    if palette is not None:
        body += chunk(b"PLTE", palette.astype(np.uint8).tobytes())
    if alpha is not None:
        body += chunk(b"tRNS", alpha.astype(np.uint8).tobytes())
    return b"\x89PNG\r\n\x1a\n" + body + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def pil_pixels(path: Path) -> np.ndarray:
    """What the C++ reader promises, from PIL: L -> 1 channel, RGB -> 3, RGBA / LA -> 4, P -> 3 (4 with tRNS)."""
    with Image.open(path) as image:
        image.load()
        if image.mode == "P":
            image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        elif image.mode == "LA":
            image = image.convert("RGBA")
        elif image.mode == "1":
            image = image.convert("L")
        array = np.asarray(image)
    return array[..., None] if array.ndim == 2 else array


def build_png(d: Path) -> None:
    rng = np.random.default_rng(2)
    h, w = 13, 11  # odd sizes: Adam7 passes of every length, partial bytes at low bit depths
    expected: dict[str, np.ndarray] = {}

    def save_pil(name: str, image: Image.Image, **options) -> None:
        image.save(d / f"{name}.png", **options)
        expected[name] = pil_pixels(d / f"{name}.png")

    rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    rgba = rng.integers(0, 256, (h, w, 4), dtype=np.uint8)
    gray = rng.integers(0, 256, (h, w), dtype=np.uint8)
    save_pil("pil_gray", Image.fromarray(gray))
    save_pil("pil_rgb", Image.fromarray(rgb))
    save_pil("pil_rgba", Image.fromarray(rgba))
    save_pil("pil_la", Image.fromarray(rgba[..., :2], "LA"))
    save_pil("pil_1bit", Image.fromarray(gray).convert("1"))
    save_pil("pil_palette", Image.fromarray(rgb).quantize(colors=12))
    save_pil("pil_palette_trns", Image.fromarray(rgb).quantize(colors=12), transparency=3)

    def save_raw(name: str, truth: np.ndarray, *args, check_pil: bool = True, **kwargs) -> None:
        (d / f"{name}.png").write_bytes(png_bytes(*args, **kwargs))
        expected[name] = truth
        if check_pil:  # PIL must agree with the ground truth, or the fixture itself is wrong
            assert np.array_equal(pil_pixels(d / f"{name}.png"), truth), name

    for interlace in (False, True):
        tag = "_adam7" if interlace else ""
        save_raw(f"rgb8{tag}", rgb, rgb, 2, 8, interlace)
        save_raw(f"gray8{tag}", gray[..., None], gray[..., None], 0, 8, interlace)
        g16 = rng.integers(0, 65536, (h, w, 1), dtype=np.uint16)
        # PIL opens 16-bit gray as mode I;16 and clips it to 255 when converting: the high byte is the truth here
        save_raw(f"gray16{tag}", (g16 >> 8).astype(np.uint8), g16, 0, 16, interlace, check_pil=False)
        c16 = rng.integers(0, 65536, (h, w, 3), dtype=np.uint16)
        save_raw(f"rgb16{tag}", (c16 >> 8).astype(np.uint8), c16, 2, 16, interlace)
        a16 = rng.integers(0, 65536, (h, w, 4), dtype=np.uint16)
        save_raw(f"rgba16{tag}", (a16 >> 8).astype(np.uint8), a16, 6, 16, interlace)
        la16 = rng.integers(0, 65536, (h, w, 2), dtype=np.uint16)
        la8 = (la16 >> 8).astype(np.uint8)
        save_raw(f"la16{tag}", np.concatenate([la8[..., :1]] * 3 + [la8[..., 1:]], axis=2), la16, 4, 16, interlace)
        for depth in (1, 2, 4):
            levels = rng.integers(0, 2**depth, (h, w, 1), dtype=np.uint8)
            scaled = (levels.astype(np.int32) * 255 // (2**depth - 1)).astype(np.uint8)
            save_raw(f"gray{depth}bit{tag}", scaled, levels, 0, depth, interlace)
            palette = rng.integers(0, 256, (2**depth, 3), dtype=np.uint8)
            save_raw(f"palette{depth}bit{tag}", palette[levels[..., 0]], levels, 3, depth, interlace, palette=palette)
        palette = rng.integers(0, 256, (16, 3), dtype=np.uint8)
        alpha = rng.integers(0, 256, 10, dtype=np.uint8)  # shorter than the palette: the rest is opaque
        index = rng.integers(0, 16, (h, w, 1), dtype=np.uint8)
        full_alpha = np.concatenate([alpha, np.full(6, 255, np.uint8)])
        truth = np.concatenate([palette[index[..., 0]], full_alpha[index]], axis=2)
        save_raw(f"palette_trns{tag}", truth, index, 3, 8, interlace, palette=palette, alpha=alpha)

    for name, array in expected.items():
        np.save(d / f"{name}.npy", array)
    (d / "names.txt").write_text("\n".join(sorted(expected)) + "\n")
    # files the reader must refuse
    Image.fromarray(rgb).save(d / "photo.jpg", quality=90)
    good = (d / "rgb8.png").read_bytes()
    (d / "truncated.png").write_bytes(good[: len(good) // 2])
    broken = bytearray(good)
    broken[40] ^= 0x01  # inside IDAT: the chunk's CRC no longer matches
    (d / "badcrc.png").write_bytes(bytes(broken))


# ---------------------------------------------------------------- image operations (PIL's arithmetic)


def smooth_noise(rng: np.random.Generator, h: int, w: int, c: int) -> np.ndarray:
    """Gradients plus noise plus hard edges: exercises rounding and the clipping of bicubic overshoot."""
    y, x = np.mgrid[0:h, 0:w]
    base = (x * 255 / max(w - 1, 1))[..., None] * np.linspace(0.3, 1.0, c) + (y * 97 % 256)[..., None] * 0.2
    base += rng.normal(0, 25, (h, w, c))
    base[(x // 3 + y // 4) % 5 == 0] = 255
    base[(x + y) % 7 == 0] = 0
    return np.clip(base, 0, 255).astype(np.uint8)


def build_image(d: Path) -> None:
    from edgesdk.runtime.image import center_crop, grid

    rng = np.random.default_rng(3)
    modes = {1: "L", 3: "RGB", 4: "RGBA"}
    cases = []

    def to_pil(array: np.ndarray) -> Image.Image:
        return Image.fromarray(array[..., 0] if array.shape[2] == 1 else array, modes[array.shape[2]])

    def as_hwc(image: Image.Image | np.ndarray) -> np.ndarray:
        array = np.asarray(image, dtype=np.uint8)
        return array[..., None] if array.ndim == 2 else array

    # channel conversions
    for c in (1, 3, 4):
        source = smooth_noise(rng, 9, 14, c)
        np.save(d / f"convert_src{c}.npy", source)
        for target, mode in modes.items():
            np.save(d / f"convert_{c}_to_{target}.npy", as_hwc(to_pil(source).convert(mode)))
    # an exhaustive-ish luma check: many random colours in one row
    colours = rng.integers(0, 256, (1, 50000, 3), dtype=np.uint8)
    np.save(d / "luma_src.npy", colours)
    np.save(d / "luma_L.npy", as_hwc(Image.fromarray(colours).convert("L")))

    # center_crop (down, up, square, odd sizes, strong factors, every channel count)
    crops = [(64, 48, 3, 32), (20, 30, 3, 32), (100, 100, 3, 37), (33, 17, 3, 16), (7, 5, 3, 24),
             (300, 200, 3, 64), (50, 40, 1, 24), (41, 29, 1, 41), (40, 30, 4, 20), (23, 61, 4, 30), (16, 16, 3, 16),
             (40, 88, 3, 32), (9, 76, 1, 5)]  # the last two: Pillow 13 resizes vertically first
    for i, (w, h, c, size) in enumerate(crops):
        source = smooth_noise(rng, h, w, c)
        if c == 4:
            source[..., 3] = rng.integers(0, 256, (h, w))  # every alpha level, 0 and 255 included
            source[0, :, 3] = 0
            source[1, :, 3] = 255
        np.save(d / f"crop{i}_src.npy", source)
        np.save(d / f"crop{i}_out.npy", as_hwc(center_crop(to_pil(source), size)))
        cases.append({"name": f"crop{i}", "size": size})
    # plain resizes: one axis down and the other up, one axis unchanged, either pass first
    resizes = [(45, 33, 3, 20, 50), (45, 33, 3, 45, 12), (45, 33, 1, 70, 33), (12, 9, 4, 31, 4),
               (68, 59, 3, 52, 21), (68, 22, 3, 57, 10), (35, 31, 1, 19, 7)]
    for i, (w, h, c, tw, th) in enumerate(resizes):
        source = smooth_noise(rng, h, w, c)
        np.save(d / f"resize{i}_src.npy", source)
        np.save(d / f"resize{i}_out.npy", as_hwc(to_pil(source).resize((tw, th), Image.Resampling.BICUBIC)))
        cases.append({"name": f"resize{i}", "width": tw, "height": th})
    # grid
    tiles = rng.integers(0, 256, (5, 4, 3, 3), dtype=np.uint8)
    np.save(d / "grid_tiles.npy", tiles)
    np.save(d / "grid_auto.npy", grid(tiles))
    np.save(d / "grid_2.npy", grid(tiles, 2))
    (d / "cases.json").write_text(json.dumps(cases))


# ---------------------------------------------------------------- bundles


def link_shared_bundle(out: Path, name: str, shared_name: str) -> None:
    """OUT/bundles/NAME/NAME.edge: the shared test bundle, hard-linked file by file (copied across file systems)."""
    def build(d: Path) -> None:
        link_bundle(shared_test_bundle(shared_name, shared_root(out)), d / f"{name}.edge")

    step(out, f"bundles/{name}", build)


def shared_root(out: Path) -> Path:
    """Where the shared test bundles are: $EDGESDK_TEST_BUNDLES (`make test`), else OUT/shared-bundles."""
    return bundle_root(out / "shared-bundles")


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_bundle(d: Path, contents: dict[str, bytes], **overrides) -> Path:
    """A small synthetic bundle: `contents` written and listed, one component using the first file; `overrides`
    replace manifest keys."""
    d.mkdir(parents=True)
    for rel, data in contents.items():
        (d / rel).parent.mkdir(parents=True, exist_ok=True)
        (d / rel).write_bytes(data)
    first = next(iter(contents), None)
    manifest = {
        "format": "edgesdk-bundle", "format_version": 1, "family": "synthetic",
        "model": {"task": "test"},
        "assets": {},
        "components": {"net": {"inputs": [{"name": "x", "dtype": "float32", "shape": ["batch", 3]}],
                               "outputs": [{"name": "y", "dtype": "float32", "shape": ["batch", 3]}],
                               "files": {"onnx": first} if first else {},
                               "dynamic_dims": {"batch": {"min": 1, "max": 8}}}},  # the schema wants its range
        "files": {rel: sha(d / rel) for rel in contents},
    }
    manifest.update(overrides)
    (d / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return d


def build_bad_bundles(d: Path, tiny_sd: Path) -> None:
    # one byte flipped in a program: the checksum no longer matches
    corrupt = d / "corrupt.edge"
    shutil.copytree(tiny_sd, corrupt)
    pte = corrupt / "executorch" / "vae_encoder.pte"
    data = bytearray(pte.read_bytes())
    data[len(data) // 2] ^= 0xFF
    pte.write_bytes(bytes(data))
    # a manifest naming a file outside the bundle
    outside = write_bundle(d / "escape.edge", {"model.onnx": b"model"})
    (d / "x").write_bytes(b"outside")
    manifest = json.loads((outside / "manifest.json").read_text())
    manifest["files"]["../x"] = sha(d / "x")
    (outside / "manifest.json").write_text(json.dumps(manifest))

    ok = {"model.onnx": b"not really onnx", "assets/vocab.json": b'{"a": 1}'}
    write_bundle(d / "good.edge", ok, assets={"vocab": "assets/vocab.json"})
    (d / "empty.edge").mkdir()
    (d / "not_a_folder.edge").write_text("a file")
    bad_json = write_bundle(d / "badjson.edge", ok)
    (bad_json / "manifest.json").write_text('{"format": "edgesdk-bundle",\n  "format_version": 1,\n  oops}')
    write_bundle(d / "listjson.edge", ok)
    (d / "listjson.edge" / "manifest.json").write_text("[1, 2]")
    write_bundle(d / "format.edge", ok, format="something-else")
    write_bundle(d / "version.edge", ok, format_version=2)
    write_bundle(d / "nofiles.edge", ok, files=[])
    unlisted = write_bundle(d / "unlisted.edge", ok)
    m = json.loads((unlisted / "manifest.json").read_text())
    del m["files"]["model.onnx"]
    (unlisted / "manifest.json").write_text(json.dumps(m))
    missing = write_bundle(d / "missing.edge", ok)
    (missing / "assets" / "vocab.json").unlink()
    for name, rel in (("absolute", "/etc/passwd"), ("backslash", "assets\\vocab.json"), ("dotdot", "assets/../../x")):
        b = write_bundle(d / f"{name}.edge", ok)
        m = json.loads((b / "manifest.json").read_text())
        m["assets"] = {"evil": rel}
        (b / "manifest.json").write_text(json.dumps(m))
    link = write_bundle(d / "symlink.edge", ok)
    (link / "assets" / "link.json").symlink_to("../../x")  # relative: the folder is renamed when complete
    m = json.loads((link / "manifest.json").read_text())
    m["files"]["assets/link.json"] = sha(d / "x")
    (link / "manifest.json").write_text(json.dumps(m))
    # good.edge has no executorch file; this one has the CLIP tokenizer asset
    write_bundle(d / "clip.edge", ok, assets={"clip_tokenizer": "assets/vocab.json"})


# ---------------------------------------------------------------- tokenizer


PROMPTS = [
    "a red circle",
    "A Large BLUE square, on the left!",
    "red;green:blue.yellow?purple!orange,white",
    "  \t a\nsmall   star  ",
    "a <me> on the left",
    "<Me> at the top",
    "a red <me>, <you>; at the top",
    "a<me>b",
    "<a b> red",
    "<<me>> red",
    "<> red",
    "<bos> red",
    "a\u00a0red\u2003circle\u3000star",
    "",
    " ,.;:!? ",
    "a purple dragon and a pink unicorn, a dragon",
    "a red circle on a blue square at the top left in the center on a white background",
    "a red circle on the left",
    "caf\u00e9 red",
]


def build_tokenizer(d: Path, tiny_sd: Path) -> None:
    from edgesdk.runtime.bundle import Bundle
    from edgesdk.runtime.errors import EdgeSDKError
    from edgesdk.runtime.tokenizer import Tokenizer

    bundle = Bundle.open(tiny_sd)
    tokenizer = Tokenizer.from_bundle(bundle)
    table = bundle.asset_array("token_embedding").astype(np.float32)
    rng = np.random.default_rng(4)
    learned = {"<me>": rng.standard_normal((2, table.shape[1])).astype(np.float32),
               "<you>": rng.standard_normal((1, table.shape[1])).astype(np.float32)}

    def attempt(call: Callable[..., object], *args: object) -> tuple[object, str | None]:
        try:
            return call(*args), None
        except EdgeSDKError as e:
            return None, str(e)

    cases, embeddings = [], []
    for prompt in PROMPTS:
        ids, ids_error = attempt(tokenizer.ids, prompt)
        vectors, embed_error = attempt(tokenizer.embed, prompt, table, learned)
        case = {"prompt": prompt, "words": tokenizer.words(prompt),
                "ids": None if ids is None else [int(i) for i in ids], "ids_error": ids_error,
                "embed_index": None, "embed_error": embed_error}
        if vectors is not None:
            case["embed_index"] = len(embeddings)
            embeddings.append(vectors)
        cases.append(case)
    bad_learned = {
        "wrong_width": {"<me>": np.zeros((2, table.shape[1] + 1), np.float32)},
        "bad_name": {"me": np.zeros((1, table.shape[1]), np.float32)},
        "too_long": {"<me>": np.zeros((13, table.shape[1]), np.float32)},
    }
    learned_errors = {}
    for name, values in bad_learned.items():
        prompt = "a <me> on the left"
        learned_errors[name] = attempt(tokenizer.embed, prompt, table, values)[1]
    case_sensitive = dict(bundle.asset_json("vocabulary"), lowercase=False)
    strict = Tokenizer(case_sensitive)
    result = {
        "cases": cases,
        "learned": {k: v.tolist() for k, v in learned.items()},
        "learned_errors": learned_errors,
        "unconditional": [int(i) for i in tokenizer.unconditional_ids()],
        "case_sensitive": {"prompt": "a Red circle", "words": strict.words("a Red circle"),
                           "error": attempt(strict.ids, "a Red circle")[1]},
    }
    malformed = {
        "no_tokens": {"pad": "<pad>", "bos": "<bos>", "eos": "<eos>", "max_tokens": 4},
        "bad_special": {"tokens": ["<pad>", "<bos>"], "pad": "<pad>", "bos": "<bos>", "eos": "<eos>", "max_tokens": 4},
        "small": {"tokens": ["<pad>", "<bos>", "<eos>"], "pad": "<pad>", "bos": "<bos>", "eos": "<eos>",
                  "max_tokens": 1},
    }
    result["malformed"] = {name: {"vocabulary": v, "error": attempt(Tokenizer, v)[1]}
                           for name, v in malformed.items()}
    (d / "cases.json").write_text(json.dumps(result, ensure_ascii=False, indent=1))
    np.save(d / "embeddings.npy", np.stack(embeddings))


# ---------------------------------------------------------------- 1-bit containers


def build_onebit(d: Path) -> None:
    from edgesdk.runtime.onebit import pack

    rng = np.random.default_rng(5)
    signs = lambda n: np.where(rng.random(n) < 0.5, np.float32(-1), np.float32(1)).astype("<f4").tobytes()  # noqa: E731
    # runs at every byte alignment, one too short to pack, noise between them
    parts = [rng.bytes(3), signs(100), rng.bytes(5), signs(70), rng.bytes(2), signs(20), rng.bytes(1), signs(200),
             rng.bytes(7), signs(64), rng.bytes(11)]
    original = b"".join(parts)
    blob, header = pack(original)
    assert header["runs"], "the fixture must hold packed runs"
    (d / "model.bin").write_bytes(original)
    (d / "model.bin.1bit").write_bytes(blob)
    corrupt = bytearray(blob)
    corrupt[-1] ^= 0x80  # the first sign bit of the last byte (its low bits may be padding): caught by the checksum
    (d / "corrupt.bin.1bit").write_bytes(bytes(corrupt))
    (d / "badmagic.bin.1bit").write_bytes(b"NOTAMAGIC!!!" + blob[12:])
    (d / "truncated.bin.1bit").write_bytes(blob[:-40])
    (d / "plain.bin").write_bytes(b"plain bytes, not a container")


# ---------------------------------------------------------------- sessions


def build_session(d: Path, out: Path) -> None:
    """For every component of every bundle: random inputs at each batch and the Python ExecuTorch session's
    outputs, as .npy, indexed in cases.json."""
    from edgesdk.runtime.backends import open_session
    from edgesdk.runtime.bundle import Bundle

    rng = np.random.default_rng(6)
    cases = []
    for name in BUNDLES:
        path = out / "bundles" / name / f"{name}.edge"
        bundle = Bundle.open(path)
        for component, info in sorted(bundle.components.items()):
            if "executorch" not in info.files:
                continue
            session = open_session(bundle, component, "executorch")
            for batch in SESSION_BATCHES:
                inputs = {}
                for spec in info.inputs:
                    shape = [batch if dim == "batch" else int(dim) for dim in spec.shape]
                    inputs[spec.name] = rng.standard_normal(shape).astype(np.float32)
                outputs = session.run(inputs)
                prefix = f"{name}_{component}_b{batch}"
                for kind, arrays in (("in", inputs), ("out", outputs)):
                    for key, array in arrays.items():
                        np.save(d / f"{prefix}_{kind}_{key}.npy", np.ascontiguousarray(array, dtype=np.float32))
                cases.append({"bundle": str(path.relative_to(out)), "component": component, "batch": batch,
                              "inputs": [f"{prefix}_in_{spec.name}.npy" for spec in info.inputs],
                              "outputs": [f"{prefix}_out_{spec.name}.npy" for spec in info.outputs]})
    (d / "cases.json").write_text(json.dumps(cases, indent=1))


def main() -> None:
    out = Path(sys.argv[1]).resolve()
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    step(out, "npy", build_npy)
    step(out, "png", build_png)
    step(out, "image", build_image)
    step(out, "onebit", build_onebit)
    (out / "bundles").mkdir(exist_ok=True)
    for name, shared_name in BUNDLES.items():
        link_shared_bundle(out, name, shared_name)
    tiny_sd = out / "bundles" / "tiny-sd" / "tiny-sd.edge"
    step(out, "bundles/bad", lambda d: build_bad_bundles(d, tiny_sd))
    step(out, "tokenizer", lambda d: build_tokenizer(d, tiny_sd))
    step(out, "clip_tokenizer", lambda d: clip_fixtures.build(d, write_bundle))
    step(out, "session", lambda d: build_session(d, out))


if __name__ == "__main__":
    main()
