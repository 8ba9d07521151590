"""The Python references for tests/test_clip_tokenizer.cpp (the `clip_tokenizer` step of cpp_fixtures.py).

runtime/clip_tokenizer.py (ClipTokenizer over the `tokenizers` package) is the reference. Written to OUT/:

    assets/NAME.json     clip_tokenizer assets: sd1 / sd2 (write_clip_tokenizer_files, pad "!" for SD-2), the
                         tokenizer.json that transformers saves, and variants of sd1 that exercise the rest of the
                         BPE (added tokens, unknown bytes with and without fuse_unk, ignore_merges, no end-of-word
                         suffix, merges as "a b" strings, an eos id that text can produce)
    cases.json           per asset: ids or the error of every prompt; for sd1 also words, embed (learned
                         placeholders spliced in), the index, learned-vector errors; malformed assets and their
                         errors; pipelines Python runs and the C++ port refuses (kBundleUnsupported)
    embeddings.npy       sd1's embed() outputs, table.npy the (vocab, 8) table they read
    clip.edge/           a bundle holding the sd1 asset and table, for Tokenizer::from_bundle
    unicode.json, codepoints.bin
                         tokenizers' and Python's answers on every code point: regex classes, Python's isspace and
                         final-sigma context, both lower-casings, NFC of single code points and of mark sequences
"""

from __future__ import annotations

import json
import random
import sys
import unicodedata
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[3]
CODE_POINTS = [c for c in range(0x110000) if not 0xD800 <= c < 0xE000]
TABLE_WIDTH = 8


# ---------------------------------------------------------------------------------------------------- prompts

PIECES = {
    "ascii": ["a", "photo", "of", "the", "red", "dog", "cat", "painting", "style", "zebra", "rendering", "hello",
              "World", "PHOTO", "Red", "DoG", "x", "qq", "redness", "dogs", "café"],
    "accents": ["café", "cafe\u0301", "CAFÉ", "CAFE\u0301", "naïve", "nai\u0308ve", "ñandú", "n\u0303", "Ångström",
                "\u212bngstr\u00f6m", "\u212a", "a\u0323\u0302", "a\u0302\u0323", "\u1ead", "e\u0301\u0301",
                "o\u0308\u0304", "\u01d5", "U\u0308\u0304", "s\u0323\u0307", "\u1e69", "\u0915\u093c", "\u0958",
                "\u1100\u1161\u11a8", "\u1100\u1161", "\uac00\u11a8", "\uac01", "\u0b47\u0b3e", "\u00c5\u0328",
                "A\u030a\u0328", "\u0344", "\u0f73", "\u2000", "\u2126", "\u1f71", "\u0340a", "x\u0305\u0316\u0301"],
    "upper": ["ΣΟΦΙΑ", "ΟΔΟΣ", "ΟΔΟΣ.", "Σ", "ΑΣ", "Α\u0301Σ", "ΑΣ\u0301", "ΑΣΑ", "'ΑΣ'", "İstanbul", "İ", "Ω",
              "Å", "ÅSA", "МОСКВА", "Москва", "ЁЛКА", "ĞÜŞ", "ǅ", "ǈ", "ᾼ", "ΐ", "ẞ", "ß", "\U00010400\U00010401",
              "\u10a0", "\u1c90", "\u1c89", "\ua7cb", "\U00010d50", "\u2160\u2161", "\u24b6", "ＡＢＣ", "Ǉ"],
    "cjk": ["東京", "北京市", "ひらがな", "カタカナ", "한국어", "中文字", "日本語の文", "ｶﾀｶﾅ", "〇", "\u3400",
            "\U00020000"],
    "emoji": ["🙂", "👍🏽", "👨\u200d👩\u200d👧", "🇫🇷", "❤️", "✨", "🐱", "\U0001f9d1\u200d\U0001f3a8"],
    "digits": ["2024", "3.5", "100%", "１２", "½", "Ⅻ", "٣", "१२", "²", "①", "10,000", "0x1F", "7th"],
    "contractions": ["it's", "IT'S", "we'll", "don't", "can't've", "'s", "''s", "'S", "they're", "you'VE", "I'm",
                     "he'd", "'ll", "o'clock", "rock'n'roll", "’s"],
    "space": [" ", "  ", "\t", "\n", "\r\n", "\u00a0", "\u3000", "\u2003", "\u0085", "\u200b", "\u180e", "\x1c",
              "\u2028", "\u202f", "\x0b", "\x0c", " \t "],
    "punctuation": ["!", "!!!", "...", "?!", "—", "«»", "()", "@#$%", ",", ";", ":", "-", "--", "&", "\\", "/",
                    "~", "^_^", "\u00ad", "\u2019", "\u201c\u201d", "¿", "¡"],
    "placeholder": ["<me>", "<Me>", "<ME>", "<you>", "<van-gogh>", "<Van-Gogh>", "<ΣΟΦΙΑ>", "<ΟΔΟΣ>", "<οδος>",
                    "<a b>", "<<me>>", "<>", "<me", "me>", "<|endoftext|>", "<|startoftext|>", "<İ>", "<cat-toy>",
                    "<CAT-TOY>"],
}
KINDS = list(PIECES)
VARIANT_PROMPTS = ["ZEBRA", "a ZEBRA and <cat-toy>", "zebra ZEBRAZEBRA", "RED DOG", "red   dog", "a Red Dog.",
                   "reddog", "<CAT-TOY>", "cat</w>", "CAT</W>", "café 🙂 à", "🙂🙂", "é", "x\u00e9y", "red",
                   "<|startoftext|>cat", "a <|endoftext|> dog", "<|endoftext|><|endoftext|>", "red dog!", "a red dogs"]


def random_code_point(rng: random.Random) -> str:
    """A character from anywhere: letters of many scripts, marks, symbols, unassigned and private-use code points."""
    while True:
        block = rng.choice([(0x20, 0x2FF), (0x300, 0x36F), (0x370, 0x52F), (0x590, 0x6FF), (0x900, 0xDFF),
                            (0x1100, 0x11FF), (0x1E00, 0x1FFF), (0x2000, 0x2BFF), (0x3000, 0x30FF), (0x4E00, 0x4FFF),
                            (0xAC00, 0xD7A3), (0xFB00, 0xFFFD), (0x10000, 0x1FFFF), (0xA640, 0xA7FF),
                            (0x1D400, 0x1D7FF), (0xE0000, 0xE01EF)])
        c = rng.randint(*block)
        if not 0xD800 <= c < 0xE000:
            return chr(c)


def random_prompt(rng: random.Random) -> str:
    parts = []
    for _ in range(rng.randint(1, 12)):
        kind = rng.choice(KINDS + ["ascii", "ascii", "space", "random"])
        piece = random_code_point(rng) if kind == "random" else rng.choice(PIECES[kind])
        if kind == "ascii" and rng.random() < 0.2:
            piece = piece.upper()
        parts.append(piece)
        parts.append(rng.choice([" ", " ", " ", "", "\t", "  ", "\u00a0", ", "]))
    return "".join(parts)


def test_module():
    """tests/test_clip_tokenizer.py, whose PROMPTS and WORDS the C++ test shares."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    import tests.test_clip_tokenizer

    return tests.test_clip_tokenizer


def prompts() -> list[str]:
    PROMPTS = test_module().PROMPTS  # noqa: N806

    rng = random.Random(7)
    out = list(PROMPTS)
    out += ["", " ", "\t\n", "\u3000", "\x1c", "\u200b", "red", "RED", "Red.", "a <me>", "<me>", "<me> <me>",
            "a <you> dog", "a <me>, <you>; the <ME>", "<|endoftext|>", "a <|endoftext|> dog", "<|ENDOFTEXT|>",
            "ΟΔΟΣ ΣΟΦΙΑ <ΟΔΟΣ> <οδος>", "İ i̇ I ı", " ".join(["red"] * 75), " ".join(["red"] * 76),
            " ".join(["red"] * 74) + " <me>", " ".join(["red"] * 73) + " <me>", " ".join(["it's"] * 38),
            "<cat-toy> on a red square", "a zebra and <CAT-TOY>", "ZEBRAS zebra", "the red dog and the red cat"]
    for kind, pieces in PIECES.items():  # every piece alone and in a sentence
        for piece in pieces:
            out.append(piece)
            out.append(f"a {piece} photo" if kind != "space" else f"a{piece}photo")
    while len(out) < 900:
        out.append(random_prompt(rng))
    return out


# ---------------------------------------------------------------------------------------------------- assets


def variants(sd1: dict) -> dict[str, dict]:
    """sd1 changed so that the parts of the BPE and of the added vocabulary CLIP's own assets never use run too."""
    base = json.loads(sd1["tokenizer"])
    vocab = base["model"]["vocab"]
    out = {}

    def asset(pipeline: dict, **changes: object) -> dict:
        return {**sd1, "tokenizer": json.dumps(pipeline, ensure_ascii=False), **changes}

    added = json.loads(sd1["tokenizer"])
    size = len(vocab)
    added["added_tokens"] = [
        {"id": size, "content": "<cat-toy>", "single_word": False, "lstrip": False, "rstrip": False,
         "normalized": True, "special": False},  # textual inversion, as transformers adds it
        {"id": size + 1, "content": "ZEBRA", "single_word": False, "lstrip": False, "rstrip": False,
         "normalized": False, "special": False},  # matched in the text as typed
        {"id": size + 2, "content": "Red Dog", "single_word": False, "lstrip": False, "rstrip": False,
         "normalized": True, "special": False},  # normalized: matches "red dog", "RED  DOG"
        {"id": vocab["cat</w>"], "content": "cat</w>", "single_word": False, "lstrip": False, "rstrip": False,
         "normalized": True, "special": False},  # already in the vocabulary: keeps its id
    ]
    out["added"] = asset(added)

    # byte 0xC3 (the first byte of é, à, ...) and 0xF0 (of emoji) unknown: they become <unk>
    unknown = json.loads(sd1["tokenizer"])
    model = unknown["model"]
    symbols = {"\u00c3", "\u00f0"}
    model["vocab"] = {t: i for t, i in model["vocab"].items() if t.removesuffix("</w>") not in symbols}
    model["vocab"]["<unk>"] = max(model["vocab"].values()) + 1
    model["merges"] = [m for m in model["merges"] if all(p in model["vocab"] for p in (m[0], m[1], m[0] + m[1]))]
    model["unk_token"] = "<unk>"
    out["unk"] = asset(unknown)
    fused = json.loads(json.dumps(unknown))
    fused["model"]["fuse_unk"] = True
    out["unk_fused"] = asset(fused)
    no_unk = json.loads(json.dumps(unknown))
    no_unk["model"]["unk_token"] = None  # unknown characters are dropped
    out["no_unk"] = asset(no_unk)

    ignore = json.loads(sd1["tokenizer"])
    ignore["model"]["ignore_merges"] = True
    out["ignore_merges"] = asset(ignore)
    no_suffix = json.loads(sd1["tokenizer"])
    no_suffix["model"]["end_of_word_suffix"] = None
    out["no_suffix"] = asset(no_suffix)
    legacy = json.loads(sd1["tokenizer"])
    legacy["model"]["merges"] = ["#version: 0.2", *(f"{a} {b}" for a, b in legacy["model"]["merges"])]
    out["legacy_merges"] = asset(legacy)
    # normalizers in another order, Lowercase first and no NFC: still the implemented parts
    order = json.loads(sd1["tokenizer"])
    order["normalizer"] = {"type": "Sequence", "normalizers": [
        {"type": "Lowercase"}, {"type": "Replace", "pattern": {"Regex": "\\s+"}, "content": "_"}]}
    out["normalizers"] = asset(order)
    # a Split regex with literal alternatives first (transformers writes <|startoftext|> and <|endoftext|> there)
    # and ByteLevel's own regex, which splits those literals again
    literal = json.loads(sd1["tokenizer"])
    split, byte_level = literal["pre_tokenizer"]["pretokenizers"]
    split["pattern"]["Regex"] = "red dog|<\\|endoftext\\|>|" + split["pattern"]["Regex"]
    byte_level["use_regex"] = True
    out["literals"] = asset(literal)
    return out


def unsupported_assets(sd1: dict) -> dict[str, tuple[dict, str]]:
    """Pipelines the Python runtime runs and the C++ port refuses, with a word its message must name."""
    def changed(edit, word: str) -> tuple[dict, str]:
        pipeline = json.loads(sd1["tokenizer"])
        edit(pipeline)
        return {**sd1, "tokenizer": json.dumps(pipeline, ensure_ascii=False)}, word

    def set_model(key: str, value: object):
        return lambda p: p["model"].__setitem__(key, value)

    return {
        "nfkc": changed(lambda p: p["normalizer"]["normalizers"].__setitem__(0, {"type": "NFKC"}), "NFKC"),
        "replace": changed(lambda p: p["normalizer"]["normalizers"][1]["pattern"].__setitem__("Regex", "[ ]+"),
                           "[ ]+"),
        "whitespace": changed(lambda p: p.__setitem__("pre_tokenizer", {"type": "Whitespace"}), "Whitespace"),
        "pattern": changed(lambda p: p["pre_tokenizer"]["pretokenizers"][0]["pattern"].__setitem__(
            "Regex", "[\\p{L}]+|[^\\s\\p{L}]+"), "not CLIP's"),
        "prefix_space": changed(lambda p: p["pre_tokenizer"]["pretokenizers"][1].__setitem__("add_prefix_space",
                                                                                              True), "prefix space"),
        "byte_fallback": changed(set_model("byte_fallback", True), "byte_fallback"),
        "dropout": changed(set_model("dropout", 0.5), "dropout"),
        "lstrip": changed(lambda p: p.__setitem__("added_tokens", [
            {"id": 9999, "content": "<x>", "single_word": False, "lstrip": True, "rstrip": False,
             "normalized": True, "special": False}]), "lstrip"),
    }


def malformed_assets(sd1: dict) -> dict[str, dict]:
    without_eos = {k: v for k, v in sd1.items() if k != "eos"}
    return {
        "kind": {**sd1, "kind": "word"},
        "no_eos": without_eos,
        "not_json": {**sd1, "tokenizer": "{not json"},
        "small": {**sd1, "max_tokens": 1},
        "bad_bos": {**sd1, "bos": "abc"},
        "null_pad": {**sd1, "pad": None},
        "merge_out_of_vocab": {**sd1, "tokenizer": json.dumps({**json.loads(sd1["tokenizer"]), "model": {
            **json.loads(sd1["tokenizer"])["model"], "merges": [["r", "zz"]]}})},
        "no_model": {**sd1, "tokenizer": json.dumps({k: v for k, v in json.loads(sd1["tokenizer"]).items()
                                                     if k != "model"})},
    }


# ---------------------------------------------------------------------------------------------------- unicode


def unicode_references(d: Path) -> None:
    """What the C++ Unicode tables must reproduce, from tokenizers and Python themselves (not from the tables)."""
    from tokenizers import Regex, normalizers

    def per_code_point(normalizer: normalizers.Normalizer) -> list[str]:
        return ["\x00", *normalizer.normalize_str("\x00".join(chr(c) for c in CODE_POINTS[1:])).split("\x00")]

    classes = normalizers.Sequence([normalizers.Replace(Regex(r"\s"), "\x01"),
                                    normalizers.Replace(Regex(r"\p{L}"), "\x02"),
                                    normalizers.Replace(Regex(r"\p{N}"), "\x03")])
    marked = classes.normalize_str("".join(chr(c) for c in CODE_POINTS))
    assert len(marked) == len(CODE_POINTS)
    data = bytearray(len(CODE_POINTS))
    for i, (c, m) in enumerate(zip(CODE_POINTS, marked, strict=True)):
        value = {"\x01": 1, "\x02": 2, "\x03": 3}.get(m, 0) if c > 3 else 0
        if c in (1, 2, 3):  # the markers themselves, one at a time
            for v, pattern in ((1, r"\s"), (2, r"\p{L}"), (3, r"\p{N}")):
                if normalizers.Replace(Regex(pattern), "@").normalize_str(chr(c)) == "@":
                    value = v
        ch = chr(c)
        if ch.isspace():
            value |= 4
        after_cased = ("A" + ch + "\u03a3").lower()[-1] == "\u03c2"
        alone = (ch + "\u03a3").lower()[-1] == "\u03c2"
        value |= (1 if alone else 2 if after_cased else 0) << 3
        data[i] = value
    (d / "codepoints.bin").write_bytes(bytes(data))

    rust = per_code_point(normalizers.Lowercase())
    nfc_tk = normalizers.NFC()
    nfc_single = per_code_point(nfc_tk)
    # mark sequences: every mark tokenizers' NFD reorders, before and after marks of six classes; pairs of random
    # bases and marks; decomposed forms of every decomposable character
    nfd = per_code_point(normalizers.NFD())
    marks = [c for c in CODE_POINTS if unicodedata.combining(chr(c))]
    references = ["\u0334", "\u05b0", "\u0e38", "\u0316", "\u0301", "\u0345"]
    probes = []
    for c in marks:
        for r in references:
            probes += ["\u0915" + r + chr(c), "a" + chr(c) + r]
    probes += [d for c, d in zip(CODE_POINTS, nfd, strict=True) if d != chr(c)]
    rng = random.Random(11)
    bases = ["a", "e", "o", "u", "A", "E", "s", "\u1100", "\uac00", "\u0b47", "\u0915", "\u03b1", "\u0391", "\u0418",
             "\u05d0", "\u0627", "\u0e01", "\u3099", "\u304b", "\u1161", "\u11a8", "\u11a7"]
    pool = [chr(c) for c in marks[:400]] + ["\u0301", "\u0300", "\u0308", "\u0323", "\u0327", "\u0328", "\u0304",
                                            "\u0306", "\u0303", "\u031b", "\u0342", "\u0345", "\u093c", "\u3099"]
    for _ in range(3000):
        probes.append("".join(rng.choice(bases if rng.random() < 0.35 else pool) for _ in range(rng.randint(1, 7))))
    outputs = nfc_tk.normalize_str("\x00".join(probes)).split("\x00")
    assert len(outputs) == len(probes)
    sigma = ["ΟΔΟΣ", "ΣΑ", "Σ", "ΑΣ.", "Α.Σ", "ΑΣ'Α", "ΑΣ'", "Α'Σ", "ΑΣΣ", "ΑΣ\u0301", "Α\u00adΣ", "ΑΣ\u00ad",
             "ΑΣ\u00adΑ", "1Σ", "ΑΣ1", "aΣ b", "ǅΣ", "\u02b0Σ", "ΑΣ\u02b0", "ΑΣ\u02b0a", "ΑΣ \u0391", "<ΟΔΟΣ>",
             "ΣΟΦΙΑ ΟΔΟΣ, ΑΣ"]
    (d / "unicode.json").write_text(json.dumps({
        "rust_lower": {str(c): s for c, s in zip(CODE_POINTS, rust, strict=True) if s != chr(c)},
        "python_lower": {str(c): chr(c).lower() for c in CODE_POINTS if chr(c).lower() != chr(c)},
        "nfc_single": {str(c): s for c, s in zip(CODE_POINTS, nfc_single, strict=True) if s != chr(c)},
        "nfc_probes": [[p, o] for p, o in zip(probes, outputs, strict=True)],
        "python_lower_strings": [[s, s.lower()] for s in sigma],
    }))


# ---------------------------------------------------------------------------------------------------- cases


def build(d: Path, write_bundle) -> None:
    from edgesdk.data.clip_vocab import write_clip_tokenizer_files
    from edgesdk.runtime.clip_tokenizer import ClipTokenizer, clip_tokenizer_asset
    from edgesdk.runtime.errors import EdgeSDKError

    WORDS = test_module().WORDS  # noqa: N806

    unicode_references(d)
    folders = d / "folders"
    assets = {"sd1": clip_tokenizer_asset(write_clip_tokenizer_files(folders / "sd1", WORDS)),
              "sd2": clip_tokenizer_asset(write_clip_tokenizer_files(folders / "sd2", WORDS, pad="!"))}
    try:  # the tokenizer.json route, as transformers saves a CLIP folder
        import transformers

        fast = getattr(transformers, "CLIPTokenizerFast", transformers.CLIPTokenizer)
        fast.from_pretrained(str(folders / "sd1")).save_pretrained(str(folders / "fast"))
        assets["tokenizer_json"] = clip_tokenizer_asset(folders / "fast")
    except Exception as e:  # optional: the diffusers extra brings transformers
        print(f"clip_tokenizer: no tokenizer.json variant ({e})")
    assets.update(variants(assets["sd1"]))
    eos = json.loads(assets["sd1"]["tokenizer"])["model"]["vocab"]["dog</w>"]
    assets["eos_in_text"] = {**assets["sd1"], "eos": eos}
    (d / "assets").mkdir()
    for name, asset in assets.items():
        (d / "assets" / f"{name}.json").write_text(json.dumps(asset, ensure_ascii=False))

    def attempt(call, *args):
        try:
            return call(*args), None
        except EdgeSDKError as e:
            return None, str(e)

    texts = prompts()
    per_asset = {}
    for name, asset in assets.items():
        tok = ClipTokenizer(asset)
        # the variants on a sixth of the prompts, plus those that reach their added tokens
        chosen = texts if name == "sd1" else texts[:8] + texts[8::6] + VARIANT_PROMPTS
        if name == "eos_in_text":
            chosen = ["a red dog", "a dog", "red", "hotdog", "a red cat", "dog dog", "DOG"]
        rows = []
        for prompt in chosen:
            ids, error = attempt(tok.ids, prompt)
            rows.append({"prompt": prompt, "ids": None if ids is None else [int(i) for i in ids], "error": error})
        per_asset[name] = {"cases": rows, "bos": tok.bos, "eos": tok.eos, "pad": tok.pad, "max_tokens": tok.max_tokens}

    sd1 = ClipTokenizer(assets["sd1"])
    vocab_size = max(json.loads(assets["sd1"]["tokenizer"])["model"]["vocab"].values()) + 1
    rng = np.random.default_rng(9)
    table = rng.standard_normal((vocab_size, TABLE_WIDTH)).astype(np.float32)
    np.save(d / "table.npy", table)
    learned = {"<me>": rng.standard_normal((2, TABLE_WIDTH)).astype(np.float32),
               "<You>": rng.standard_normal((1, TABLE_WIDTH)).astype(np.float32),
               "<ΟΔΟΣ>": rng.standard_normal((1, TABLE_WIDTH)).astype(np.float32),
               "<İ>": rng.standard_normal((3, TABLE_WIDTH)).astype(np.float32)}
    embeddings, embed_cases = [], []
    for prompt in texts:
        vectors, error = attempt(sd1.embed, prompt, table, learned)
        case = {"prompt": prompt, "words": sd1.words(prompt), "embed_index": None, "embed_error": error}
        if vectors is not None:
            case["embed_index"] = len(embeddings)
            embeddings.append(vectors)
        embed_cases.append(case)
    np.save(d / "embeddings.npy", np.stack(embeddings))
    words = sorted({w for p in texts for w in p.split()} | {w.lower() for w in WORDS} | {
        "", " ", "  red ", "Red", "RED", "CAFÉ", "cafe\u0301", "it's", "red cat", "<|endoftext|>", ",", "!!", "3",
        "33", "ΟΔΟΣ", "ΑΣ", "İ", "\u3000red\u3000", "zebra", "dog", "\x1cdog"})
    index = {w: (sd1.index[w] if w in sd1.index else None) for w in words}
    prompt = "a <me> on the left"
    bad_learned = {"wrong_width": {"<me>": np.zeros((2, TABLE_WIDTH + 1), np.float32)},
                   "bad_name": {"me": np.zeros((1, TABLE_WIDTH), np.float32)},
                   "too_long": {"<me>": np.zeros((76, TABLE_WIDTH), np.float32)}}
    learned_errors = {name: attempt(sd1.embed, prompt, table, values)[1] for name, values in bad_learned.items()}
    malformed = {}
    for name, asset in malformed_assets(assets["sd1"]).items():
        malformed[name] = {"asset": asset, "error": attempt(ClipTokenizer, asset)[1]}
        assert malformed[name]["error"] is not None, name
    unsupported = {}
    for name, (asset, word) in unsupported_assets(assets["sd1"]).items():
        ClipTokenizer(asset).ids("a red dog")  # Python runs it
        unsupported[name] = {"asset": asset, "word": word}
    (d / "cases.json").write_text(json.dumps({
        "assets": per_asset, "sd1": embed_cases, "learned": {k: v.tolist() for k, v in learned.items()},
        "index": index, "learned_errors": learned_errors, "malformed": malformed, "unsupported": unsupported,
        "unconditional": [int(i) for i in sd1.unconditional_ids()],
    }, indent=None))

    # a bundle, for Tokenizer::from_bundle and the memory-mapped table
    contents = {"assets/clip_tokenizer.json": json.dumps(assets["sd1"]).encode(),
                "assets/token_embedding.npy": (d / "table.npy").read_bytes()}
    write_bundle(d / "clip.edge", contents, assets={"clip_tokenizer": "assets/clip_tokenizer.json",
                                                      "token_embedding": "assets/token_embedding.npy"})
