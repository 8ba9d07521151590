"""CLIP BPE tokenizer for imported Stable Diffusion: same ids as transformers, same API and errors as `Tokenizer`.

Three references check the ids: transformers' CLIPTokenizer on the same folder (transformers 5 has no pure-Python
"slow" CLIP tokenizer any more; its CLIPTokenizer is itself built on `tokenizers`), the tokenizer.json that
transformers saves, and a small pure-Python CLIP BPE written here from the algorithm (independent of `tokenizers`).
"""

from __future__ import annotations

import functools
import json
import unicodedata
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgesdk.data.clip_vocab import write_clip_tokenizer_files
from edgesdk.runtime import ClipTokenizer, EdgeSDKError, Tokenizer
from edgesdk.runtime.clip_tokenizer import CLIP_PATTERN, byte_symbols, clip_tokenizer_asset
from tests.conftest import run_without_torch

WORDS = ["a", "photo", "of", "the", "in", "on", "with", "red", "blue", "green", "square", "triangle", "dog", "cat",
         "painting", "style", "small", "large", "Café"]
PROMPTS = [
    "a photo of a red dog",
    "A  PHOTO\tof the Cat,  on a BLUE square!",  # upper case, tab, repeated spaces, punctuation
    "it's 2024; 3.5 cats!!",  # contraction, single digits, punctuation runs, a word that is two pieces
    "a zebra-striped café rendering",  # unknown words fall back to sub-word pieces and bytes
    "what's up?? they're here, we'll see... I'm done, you've won & he'd go",
    "small   green\n\ntriangle   ",
    "painting of <me> in the style of <Van-Gogh>",  # placeholders nobody learned are plain text
    "ÉCOLE naïve 🙂 100%",  # accents, a 4-byte emoji, NFC
]
LENGTH = 77


@pytest.fixture(scope="module")
def sd1(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_clip_tokenizer_files(tmp_path_factory.mktemp("clip") / "sd1", WORDS)


@pytest.fixture(scope="module")
def sd2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_clip_tokenizer_files(tmp_path_factory.mktemp("clip") / "sd2", WORDS, pad="!")


@pytest.fixture(scope="module")
def tok(sd1: Path) -> ClipTokenizer:
    return ClipTokenizer(clip_tokenizer_asset(sd1))


@functools.cache
def _hf_tokenizer(folder: Path) -> Any:
    transformers = pytest.importorskip("transformers")
    return transformers.CLIPTokenizer.from_pretrained(str(folder))


def hf_ids(folder: Path, prompt: str) -> list[int]:
    """transformers' ids, padded to 77 as diffusers' pipelines ask for them."""
    hf = _hf_tokenizer(folder)
    return list(hf(prompt, padding="max_length", max_length=LENGTH).input_ids)


def reference_ids(folder: Path, prompt: str) -> list[int]:
    """CLIP's tokenizer from its definition, in plain Python: NFC, white space runs to one space, lower case, CLIP's
    regex, bytes to symbols, "</w>" on each pre-token's last symbol, BPE by merge rank; bos / eos / pad around."""
    regex = pytest.importorskip("regex")
    vocab = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
    lines = (folder / "merges.txt").read_text(encoding="utf-8").splitlines()[1:]
    ranks = {tuple(line.split()): rank for rank, line in enumerate(lines)}
    config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    symbol = byte_symbols()
    text = regex.sub(r"\s+", " ", unicodedata.normalize("NFC", prompt)).strip().lower()
    body: list[int] = []
    for piece in regex.findall(CLIP_PATTERN, text):
        parts = [symbol[b] for b in piece.encode("utf-8")]
        parts[-1] += "</w>"
        while len(parts) > 1:
            pairs = [(ranks[p], i) for i, p in enumerate(zip(parts, parts[1:], strict=False)) if p in ranks]
            if not pairs:
                break
            _, i = min(pairs)  # same rank means same pair; joining the leftmost first is CLIP's order
            parts[i:i + 2] = [parts[i] + parts[i + 1]]
        body += [vocab[p] for p in parts]
    ids = [vocab[config["bos_token"]], *body, vocab[config["eos_token"]]]
    return ids + [vocab[config["pad_token"]]] * (LENGTH - len(ids))


# ---------------------------------------------------------------------------------------------------- vocabulary


def test_byte_table_is_the_clip_one() -> None:
    table = byte_symbols()
    assert sorted(table) == list(range(256)) and len(set(table.values())) == 256
    assert table[ord("a")] == "a" and table[ord("!")] == "!" and table[0xE9] == "é"
    assert table[0] == "\u0100" and table[ord(" ")] == "\u0120" and table[0xAD] == "\u0143"  # "Ġ" is the space
    assert list(table)[:3] == [ord("!"), ord('"'), ord("#")]  # printable bytes first: "!" is CLIP's id 0


def test_vocab_files(sd1: Path, tmp_path: Path) -> None:
    vocab = json.loads((sd1 / "vocab.json").read_text(encoding="utf-8"))
    assert vocab["!"] == 0 and vocab["!</w>"] == 256 and vocab["a</w>"] < 512
    assert sorted(vocab.values()) == list(range(len(vocab)))
    assert vocab["<|startoftext|>"] == len(vocab) - 2 and vocab["<|endoftext|>"] == len(vocab) - 1
    assert {"photo", "photo</w>", "caf\u00c3\u00a9</w>"} <= set(vocab)  # é is two bytes, two symbols
    for word in WORDS:  # every word is one token, alone and as the start of a longer word
        body = [i for i in reference_ids(sd1, word) if i < len(vocab) - 2]
        assert len(body) == 1, word
    again = write_clip_tokenizer_files(tmp_path / "again", WORDS)
    for name in ("vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json"):
        assert (again / name).read_bytes() == (sd1 / name).read_bytes(), name


def test_vocab_refuses_words_clip_cannot_keep_whole(tmp_path: Path) -> None:
    with pytest.raises(EdgeSDKError, match="letters only.*it's"):
        write_clip_tokenizer_files(tmp_path / "x", ["cat", "it's"])
    with pytest.raises(EdgeSDKError, match="pad token '<pad>'"):
        write_clip_tokenizer_files(tmp_path / "y", ["cat"], pad="<pad>")


# ------------------------------------------------------------------------------------------------------------ ids


@pytest.mark.parametrize("prompt", PROMPTS)
def test_ids_match_transformers_and_reference(sd1: Path, tok: ClipTokenizer, prompt: str) -> None:
    ids = tok.ids(prompt)
    assert ids.dtype == np.int64 and ids.shape == (LENGTH,)
    assert ids.tolist() == reference_ids(sd1, prompt)
    assert ids.tolist() == hf_ids(sd1, prompt)


def test_pieces_are_what_clip_makes(tok: ClipTokenizer, sd1: Path) -> None:
    vocab = json.loads((sd1 / "vocab.json").read_text(encoding="utf-8"))
    names = {i: t for t, i in vocab.items()}
    ids = tok.ids("It's a RED-dog")
    body = [names[i] for i in ids[1:list(ids).index(tok.eos)]]
    # "it" is no vocabulary word here, so it falls back to its bytes; "'s" has no merge, so two pieces
    assert body == ["i", "t</w>", "'", "s</w>", "a</w>", "red</w>", "-</w>", "dog</w>"]


def test_tokenizer_json_route(sd1: Path, tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    # transformers 5: CLIPTokenizer is the tokenizers-backed class (CLIPTokenizerFast is an alias); 4.x: the fast one
    fast_class = getattr(transformers, "CLIPTokenizerFast", transformers.CLIPTokenizer)
    try:
        fast_class.from_pretrained(str(sd1)).save_pretrained(str(tmp_path / "fast"))
    except Exception as e:  # conversion needs optional packages in some transformers versions
        pytest.skip(f"transformers cannot convert the CLIP folder to tokenizer.json here: {e}")
    if not (tmp_path / "fast" / "tokenizer.json").is_file():
        pytest.skip("this transformers version saved no tokenizer.json")
    asset = clip_tokenizer_asset(tmp_path / "fast")
    serialized = json.loads(asset["tokenizer"])
    assert serialized["post_processor"] is None  # bos / eos come from ClipTokenizer only, never twice
    assert not [t for t in serialized["added_tokens"] if t["special"]]
    fast = ClipTokenizer(asset)
    for prompt in PROMPTS:
        assert fast.ids(prompt).tolist() == hf_ids(sd1, prompt), prompt


def test_asset_is_json_and_round_trips(sd1: Path, tok: ClipTokenizer) -> None:
    asset = clip_tokenizer_asset(sd1)
    vocab = json.loads((sd1 / "vocab.json").read_text(encoding="utf-8"))
    assert asset["kind"] == "clip-bpe" and asset["max_tokens"] == LENGTH
    assert (asset["bos"], asset["eos"], asset["pad"]) == (vocab["<|startoftext|>"], vocab["<|endoftext|>"],
                                                          vocab["<|endoftext|>"])
    assert json.loads(asset["tokenizer"])["post_processor"] is None
    again = ClipTokenizer(json.loads(json.dumps(asset)))
    assert again.ids(PROMPTS[2]).tolist() == tok.ids(PROMPTS[2]).tolist()


def test_unconditional_ids(tok: ClipTokenizer) -> None:
    ids = tok.unconditional_ids()
    assert ids.dtype == np.int64 and ids.tolist() == [tok.bos, tok.eos] + [tok.pad] * (LENGTH - 2)


def test_special_tokens_typed_by_the_user_are_text(sd1: Path, tok: ClipTokenizer) -> None:
    # transformers turns these into real bos / eos ids; here they are ordinary characters, as CLIP trained on them
    for prompt in ("a <|endoftext|> dog", "<|startoftext|>cat", "<|ENDOFTEXT|>"):
        ids = tok.ids(prompt).tolist()
        body = ids[1:ids.index(tok.eos)]
        assert tok.bos not in body and tok.eos not in body and len(body) > 3, prompt
        assert ids == reference_ids(sd1, prompt), prompt
    assert "<|endoftext|>" not in tok.index


def test_sd2_pad_token(sd2: Path) -> None:
    asset = clip_tokenizer_asset(sd2)
    sd2_tok = ClipTokenizer(asset)
    assert asset["pad"] == 0 and sd2_tok.pad == 0  # "!" is CLIP's id 0
    ids = sd2_tok.ids("a red cat").tolist()
    assert ids[5:] == [0] * (LENGTH - 5) and ids[4] == sd2_tok.eos
    for prompt in PROMPTS:
        assert sd2_tok.ids(prompt).tolist() == reference_ids(sd2, prompt), prompt
        if "!" not in prompt:
            assert sd2_tok.ids(prompt).tolist() == hf_ids(sd2, prompt), prompt
    # Known, deliberate difference: transformers cuts its special pad "!" out of the text first, so "hi !" gives
    # the bare "!" (id 0) there; here "!" stays text and is "!</w>" (256), as in CLIP's own BPE (reference_ids).
    assert sd2_tok.ids("hi !").tolist()[:4] == reference_ids(sd2, "hi !")[:4]
    assert sd2_tok.ids("hi !").tolist()[3] == 256


def test_model_max_length(tmp_path: Path) -> None:
    short = ClipTokenizer(clip_tokenizer_asset(write_clip_tokenizer_files(tmp_path / "short", WORDS, max_length=8)))
    assert short.max_tokens == 8 and short.max_words == 6 and short.ids("red cat").shape == (8,)
    folder = write_clip_tokenizer_files(tmp_path / "unset", WORDS)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({**config, "model_max_length": 1e30}))
    assert clip_tokenizer_asset(folder)["max_tokens"] == LENGTH  # transformers' "unset" value


def test_special_tokens_from_config_files(tmp_path: Path) -> None:
    folder = write_clip_tokenizer_files(tmp_path / "cfg", WORDS)
    vocab = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
    (folder / "special_tokens_map.json").unlink()  # tokenizer_config.json alone (plain strings)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({**config, "pad_token": "!"}))
    assert clip_tokenizer_asset(folder)["pad"] == vocab["!"]
    (folder / "tokenizer_config.json").unlink()  # no config at all: CLIP's defaults
    asset = clip_tokenizer_asset(folder)
    assert (asset["bos"], asset["eos"], asset["pad"], asset["max_tokens"]) == (
        vocab["<|startoftext|>"], vocab["<|endoftext|>"], vocab["<|endoftext|>"], LENGTH)


# ------------------------------------------------------------------------------------------------------- errors


def one_line(error: pytest.ExceptionInfo[EdgeSDKError]) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


def test_missing_folder_and_files(tmp_path: Path) -> None:
    with pytest.raises(EdgeSDKError, match="does not exist") as error:
        clip_tokenizer_asset(tmp_path / "nowhere")
    assert "nowhere" in one_line(error)
    (tmp_path / "empty").mkdir()
    with pytest.raises(EdgeSDKError, match=r"empty.*neither tokenizer\.json nor vocab\.json"):
        clip_tokenizer_asset(tmp_path / "empty")
    folder = write_clip_tokenizer_files(tmp_path / "half", WORDS)
    (folder / "merges.txt").unlink()
    with pytest.raises(EdgeSDKError, match=r"half.*merges\.txt"):
        clip_tokenizer_asset(folder)


def test_special_token_not_in_vocabulary(tmp_path: Path) -> None:
    folder = write_clip_tokenizer_files(tmp_path / "bad", WORDS)
    (folder / "special_tokens_map.json").write_text(json.dumps({"pad_token": {"content": "<pad>"}}))
    with pytest.raises(EdgeSDKError, match="pad '<pad>' are not in its vocabulary"):
        clip_tokenizer_asset(folder)


def test_malformed_asset(tok: ClipTokenizer, sd1: Path) -> None:
    asset = clip_tokenizer_asset(sd1)
    for broken in ({**asset, "kind": "word"}, {k: v for k, v in asset.items() if k != "eos"},
                   {**asset, "tokenizer": "{not json"}):
        with pytest.raises(EdgeSDKError, match="re-export the bundle"):
            ClipTokenizer(broken)


def test_missing_tokenizers_package(monkeypatch: pytest.MonkeyPatch, sd1: Path) -> None:
    asset = clip_tokenizer_asset(sd1)
    monkeypatch.setitem(__import__("sys").modules, "tokenizers", None)  # None in sys.modules: import fails
    with pytest.raises(EdgeSDKError, match="needs the 'tokenizers' package: pip install tokenizers"):
        ClipTokenizer(asset)
    with pytest.raises(EdgeSDKError, match="pip install tokenizers"):
        clip_tokenizer_asset(sd1)


@pytest.mark.parametrize("prompt", ["", "   ", "\t\n"])
def test_empty_prompt(tok: ClipTokenizer, prompt: str) -> None:
    with pytest.raises(EdgeSDKError, match="empty prompt") as error:
        tok.ids(prompt)
    one_line(error)


def test_too_long_prompt_counts_tokens(tok: ClipTokenizer) -> None:
    assert tok.max_words == LENGTH - 2
    tok.ids(" ".join(["red"] * 75))  # exactly the limit fits
    with pytest.raises(EdgeSDKError, match="76 tokens, this model takes at most 75") as error:
        tok.ids(" ".join(["red"] * 76))
    one_line(error)
    # words are not tokens: 38 copies of "it's" (i, t</w>, ', s</w>) are 38 * 4 = 152 tokens
    with pytest.raises(EdgeSDKError, match="152 tokens"):
        tok.ids(" ".join(["it's"] * 38))
    table = np.zeros((700, 4), np.float32)
    with pytest.raises(EdgeSDKError, match="76 tokens"):  # learned vectors count too
        tok.embed(" ".join(["red"] * 74) + " <me>", table, {"<me>": np.ones((2, 4), np.float32)})


# ------------------------------------------------------------------------------------------------------- embed


@pytest.fixture
def table(tok: ClipTokenizer) -> np.ndarray:
    rows = max(tok.bos, tok.eos) + 1  # bos, eos are the last vocabulary ids
    return np.arange(rows * 3, dtype=np.float32).reshape(rows, 3)  # row i is [3i, 3i+1, 3i+2]


def body(tok: ClipTokenizer, text: str) -> list[int]:
    ids = tok.ids(text).tolist()
    return ids[1:ids.index(tok.eos)]


@pytest.mark.parametrize("count", [1, 2])
def test_embed_splices_learned_rows(tok: ClipTokenizer, table: np.ndarray, count: int) -> None:
    vectors = -np.arange(1, 3 * count + 1, dtype=np.float32).reshape(count, 3)
    learned = {"<me>": vectors[0] if count == 1 else vectors}  # a single vector may be 1-D
    emb = tok.embed("a photo of <me>, on a red square", table, learned)
    assert emb.shape == (LENGTH, 3) and emb.dtype == np.float32
    before, after = body(tok, "a photo of"), body(tok, ", on a red square")
    start = 1 + len(before)
    np.testing.assert_array_equal(emb[start:start + count], vectors)
    ids = [tok.bos, *before, *after, tok.eos]
    ids += [tok.pad] * (LENGTH - count - len(ids))
    others = np.concatenate([emb[:start], emb[start + count:]])
    np.testing.assert_array_equal(others, table[ids])


def test_embed_without_learned_is_table_lookup(tok: ClipTokenizer, table: np.ndarray) -> None:
    for prompt in PROMPTS:
        np.testing.assert_array_equal(tok.embed(prompt, table), table[tok.ids(prompt)])


def test_placeholder_is_case_insensitive(tok: ClipTokenizer, table: np.ndarray) -> None:
    vector = np.full(3, -7.0, np.float32)
    lower = tok.embed("a photo of <me>", table, {"<me>": vector})
    np.testing.assert_array_equal(tok.embed("A photo of <ME>", table, {"<Me>": vector}), lower)
    assert (lower[:, 0] == -7.0).sum() == 1


def test_unlearned_placeholder_is_text(tok: ClipTokenizer, table: np.ndarray, sd1: Path) -> None:
    # not an error for CLIP: the byte-level BPE spells it, exactly as transformers does
    ids = tok.ids("a <you> dog").tolist()
    assert ids == reference_ids(sd1, "a <you> dog") == hf_ids(sd1, "a <you> dog")
    emb = tok.embed("a <you> dog", table, {"<me>": np.zeros(3, np.float32)})
    np.testing.assert_array_equal(emb, table[ids])


def test_bad_learned_vectors(tok: ClipTokenizer, table: np.ndarray) -> None:
    with pytest.raises(EdgeSDKError, match=r"expected \(k, 3\)"):
        tok.embed("a <me>", table, {"<me>": np.zeros(4, np.float32)})
    with pytest.raises(EdgeSDKError, match="must look like <word>"):
        tok.embed("a photo", table, {"me": np.zeros(3, np.float32)})


def test_placeholder_slots_for_personalization(tok: ClipTokenizer, table: np.ndarray) -> None:
    from edgesdk.runtime.personalize import placeholder_slots

    spliced, rows = placeholder_slots(tok, table, "a photo of <me>", "<me>", 2)
    start = 1 + len(body(tok, "a photo of"))
    assert rows.tolist() == [start, start + 1] and not np.isnan(spliced).any()


# ------------------------------------------------------------------------------------------------ index, words


def test_index(tok: ClipTokenizer, sd1: Path) -> None:
    vocab = json.loads((sd1 / "vocab.json").read_text(encoding="utf-8"))
    assert "red" in tok.index and "Red" in tok.index and tok.index["red"] == vocab["red</w>"]
    assert "café" in tok.index and "," in tok.index  # one token each
    for missing in ("zebra", "red cat", "reddish", "", "it's", 3):
        assert missing not in tok.index, missing
    with pytest.raises(KeyError):
        tok.index["zebra"]
    listed = list(tok.index)
    assert len(tok.index) == len(listed) and all(w in tok.index for w in listed)
    assert {w.lower() for w in WORDS} <= set(listed) and "zebra" not in listed


def test_words(tok: ClipTokenizer) -> None:
    words = tok.words("A photo of <Me>, on a RED square! see:it")
    assert words == ["a", "photo", "of", "<me>", "on", "a", "red", "square", "see", "it"]
    assert tok.lowercase is True


# ------------------------------------------------------------------------------------------- bundles, runtime


class FakeBundle:
    def __init__(self, assets: dict[str, Any]) -> None:
        self.manifest = {"assets": {name: f"assets/{name}.json" for name in assets}}
        self._assets = assets

    def asset_json(self, name: str) -> Any:
        return self._assets[name]


def test_from_bundle_dispatch(sd1: Path) -> None:
    clip = Tokenizer.from_bundle(FakeBundle({"clip_tokenizer": clip_tokenizer_asset(sd1)}))
    assert isinstance(clip, ClipTokenizer) and clip.ids("red").tolist()[:3] == [clip.bos, clip.index["red"], clip.eos]
    direct = ClipTokenizer.from_bundle(FakeBundle({"clip_tokenizer": clip_tokenizer_asset(sd1)}))
    assert isinstance(direct, ClipTokenizer)
    vocabulary = {"tokens": ["<pad>", "<bos>", "<eos>", "red"], "pad": "<pad>", "bos": "<bos>", "eos": "<eos>",
                  "max_tokens": 4}
    word = Tokenizer.from_bundle(FakeBundle({"vocabulary": vocabulary}))
    assert type(word) is Tokenizer and word.ids("red").tolist() == [1, 3, 2, 0]


def test_runtime_needs_neither_torch_nor_transformers(sd1: Path, tmp_path: Path) -> None:
    path = tmp_path / "clip_tokenizer.json"
    path.write_text(json.dumps(clip_tokenizer_asset(sd1)), encoding="utf-8")
    result = run_without_torch(f"""
import importlib.abc, json, sys
class NoTransformers(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("transformers", "diffusers"):
            raise ImportError("blocked in this test")
sys.meta_path.insert(0, NoTransformers())
from edgesdk.runtime import ClipTokenizer
tok = ClipTokenizer(json.loads(open({str(path)!r}, encoding="utf-8").read()))
print(tok.ids("a red dog").tolist()[:5])
assert "transformers" not in sys.modules
""")
    assert result.returncode == 0, result.stderr
    tok = ClipTokenizer(json.loads(path.read_text(encoding="utf-8")))
    assert result.stdout.strip() == str(tok.ids("a red dog").tolist()[:5])
