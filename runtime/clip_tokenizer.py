"""CLIP's byte-level BPE tokenizer (Stable Diffusion bundles), served by the `tokenizers` package.

The export side, `clip_tokenizer_asset`, turns a diffusers `tokenizer/` folder into a JSON asset: the `tokenizers`
pipeline (normalizer, pre-tokenizer, BPE model) as a string, plus the bos / eos / pad ids and the length. The runtime
side, `ClipTokenizer`, is a drop-in for the word-level `Tokenizer` (same methods, same errors), so the pipeline and
on-device personalization need not know which one a bundle has. Neither side needs torch or transformers.

The BPE only ever sees user text: bos, eos and padding are added here, never by a post-processor, and the special
tokens are not matched inside the text, so a user typing `<|endoftext|>` gets ordinary text pieces, not an eos.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgesdk.runtime.errors import EdgeSDKError
from edgesdk.runtime.tokenizer import _PLACEHOLDER, _PUNCTUATION, PromptEncoding

if TYPE_CHECKING:
    import tokenizers

    from edgesdk.runtime.bundle import Bundle

KIND = "clip-bpe"
SUFFIX = "</w>"  # CLIP marks the last piece of every pre-token, so "red" alone and "red" in "redness" differ
DEFAULT_BOS = "<|startoftext|>"
DEFAULT_EOS = "<|endoftext|>"
DEFAULT_LENGTH = 77
# CLIP's pre-tokenizer: contractions, letter runs, single digits, runs of anything else; white space is dropped
CLIP_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
_UNSET_LENGTH = 1000  # transformers writes a huge model_max_length (1e30) when a folder sets none
_MISSING = "this bundle's CLIP tokenizer needs the 'tokenizers' package: pip install tokenizers"


def byte_symbols() -> dict[int, str]:
    """Byte -> the printable character that stands for it in byte-level BPE vocabularies (the GPT-2 / CLIP table).

    Bytes that already print as a visible Latin-1 character keep it; the others (controls, space, soft hyphen) get
    the characters from U+0100 on, in byte order. Insertion order is the printable bytes first, as CLIP numbers its
    first 256 vocabulary entries (so "!" is id 0)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in printable}
    others = [b for b in range(256) if b not in table]
    table.update({b: chr(256 + n) for n, b in enumerate(others)})
    return table


def _tokenizers() -> Any:
    try:
        import tokenizers
    except ImportError:
        raise EdgeSDKError(_MISSING) from None
    return tokenizers


# ---------------------------------------------------------------------------------------------------- export side


def clip_tokenizer_asset(tokenizer_dir: Path) -> dict[str, Any]:
    """The `clip_tokenizer` asset of a diffusers `tokenizer/` folder (tokenizer.json, or vocab.json + merges.txt)."""
    lib = _tokenizers()
    folder = Path(tokenizer_dir)
    if not folder.is_dir():
        raise EdgeSDKError(f"tokenizer folder {str(folder)!r} does not exist; a diffusers folder has tokenizer/")
    config = _special_config(folder)
    bos, eos = config.get("bos_token") or DEFAULT_BOS, config.get("eos_token") or DEFAULT_EOS
    pad = config.get("pad_token") or eos  # SD-1 pads with eos; SD-2 folders say "!"
    unk = config.get("unk_token") or DEFAULT_EOS
    if (folder / "tokenizer.json").is_file():
        try:
            loaded = lib.Tokenizer.from_file(str(folder / "tokenizer.json"))
        except Exception as e:  # the Rust side raises a bare Exception for any parse error
            raise EdgeSDKError(f"{str(folder / 'tokenizer.json')!r} is not a tokenizers file: {e}") from None
        ids = {name: loaded.token_to_id(token) for name, token in (("bos", bos), ("eos", eos), ("pad", pad))}
        text = _text_only(loaded.to_str())
    else:
        vocab, merges = _read_bpe_files(folder)
        ids = {name: vocab.get(token) for name, token in (("bos", bos), ("eos", eos), ("pad", pad))}
        if unk not in vocab:
            raise EdgeSDKError(f"{str(folder)!r}: the unk token {unk!r} is not in vocab.json")
        text = _build_clip(lib, vocab, merges, unk).to_str()
    missing = [f"{name} {token!r}" for (name, token) in (("bos", bos), ("eos", eos), ("pad", pad)) if ids[name] is None]
    if missing:
        raise EdgeSDKError(f"{str(folder)!r}: special tokens {', '.join(missing)} are not in its vocabulary")
    return {"kind": KIND, "tokenizer": text, **{k: int(v) for k, v in ids.items()},
            "max_tokens": _max_length(config, folder)}


def _special_config(folder: Path) -> dict[str, Any]:
    """Special tokens and model_max_length; special_tokens_map.json wins over tokenizer_config.json, as in
    transformers. Token values are strings or AddedToken dicts ({"content": ...})."""
    merged: dict[str, Any] = {}
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        path = folder / name
        if not path.is_file():
            continue
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise EdgeSDKError(f"{str(path)!r} is not valid JSON ({e})") from None
        if not isinstance(data, dict):
            raise EdgeSDKError(f"{str(path)!r} must hold a JSON object")
        for key in ("bos_token", "eos_token", "pad_token", "unk_token"):
            value = data.get(key)
            if isinstance(value, dict):
                value = value.get("content")
            if isinstance(value, str) and value:
                merged[key] = value
        if "model_max_length" in data:
            merged["model_max_length"] = data["model_max_length"]
    return merged


def _max_length(config: dict[str, Any], folder: Path) -> int:
    value = config.get("model_max_length", DEFAULT_LENGTH)
    try:
        length = int(value)
    except (TypeError, ValueError, OverflowError):
        raise EdgeSDKError(f"{str(folder)!r}: model_max_length {value!r} is not a number") from None
    if length > _UNSET_LENGTH:
        return DEFAULT_LENGTH
    if length < 2:
        raise EdgeSDKError(f"{str(folder)!r}: model_max_length is {length}; it must leave room for bos and eos")
    return length


def _read_bpe_files(folder: Path) -> tuple[dict[str, int], list[tuple[str, str]]]:
    for name in ("vocab.json", "merges.txt"):
        if not (folder / name).is_file():
            raise EdgeSDKError(f"tokenizer folder {str(folder)!r} has neither tokenizer.json nor {name}; "
                               "copy the model's complete tokenizer/ folder")
    try:
        vocab = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
        lines = (folder / "merges.txt").read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise EdgeSDKError(f"tokenizer folder {str(folder)!r}: cannot read vocab.json / merges.txt ({e})") from None
    if not isinstance(vocab, dict) or not all(isinstance(v, int) for v in vocab.values()):
        raise EdgeSDKError(f"{str(folder / 'vocab.json')!r} must map tokens to integer ids")
    merges: list[tuple[str, str]] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip() or line.startswith("#version"):
            continue  # the header line tokenizers and CLIP both write
        pair = line.split()
        if len(pair) != 2:
            raise EdgeSDKError(f"{str(folder / 'merges.txt')!r} line {number} is {line!r}; expected two symbols")
        merges.append((pair[0], pair[1]))
    return vocab, merges


def _build_clip(lib: Any, vocab: dict[str, int], merges: list[tuple[str, str]], unk: str) -> tokenizers.Tokenizer:
    """CLIP's pipeline from its parts: NFC, white-space runs to one space, lower case; CLIP's regex (matches kept);
    bytes to printable symbols; BPE with "</w>" on every pre-token's last piece. No post-processor: bos / eos are
    ClipTokenizer's job."""
    normalizers, pre_tokenizers = lib.normalizers, lib.pre_tokenizers
    model = lib.models.BPE(vocab=vocab, merges=merges, unk_token=unk, continuing_subword_prefix="",
                           end_of_word_suffix=SUFFIX, fuse_unk=False)
    tok = lib.Tokenizer(model)
    tok.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Replace(lib.Regex(r"\s+"), " "),
                                           normalizers.Lowercase()])
    # invert=True with "removed": keep what the regex matches, drop the gaps (white space)
    split = pre_tokenizers.Split(lib.Regex(CLIP_PATTERN), behavior="removed", invert=True)
    # use_regex=False: CLIP's split already cut the text; ByteLevel only maps bytes to symbols
    tok.pre_tokenizer = pre_tokenizers.Sequence([split, pre_tokenizers.ByteLevel(add_prefix_space=False,
                                                                                  use_regex=False)])
    tok.decoder = lib.decoders.ByteLevel()
    return tok


def _text_only(serialized: str) -> str:
    """A tokenizer.json reduced to what user text needs: no post-processor (it would add bos / eos a second time),
    no truncation or padding (too long prompts are refused, not cut), and no special added tokens, so their strings
    in a prompt are tokenized as text. Non-special added tokens (e.g. textual-inversion words) stay."""
    data = json.loads(serialized)
    data["post_processor"] = None
    data["truncation"] = None
    data["padding"] = None
    data["added_tokens"] = [t for t in data.get("added_tokens") or [] if not t.get("special")]
    return json.dumps(data, ensure_ascii=False)


# --------------------------------------------------------------------------------------------------- runtime side


class _Index(Mapping[str, int]):
    """`word in index` iff the lower-cased word is exactly one CLIP token; `index[word]` is that token's id.

    Lookups are cached; iteration lists the vocabulary's whole-word entries ("red</w>" as "red") that pass that test,
    so the Mapping stays consistent."""

    def __init__(self, owner: ClipTokenizer) -> None:
        self._owner = owner
        self._cache: dict[str, int | None] = {}
        self._words: list[str] | None = None

    def __getitem__(self, word: str) -> int:
        if not isinstance(word, str):  # `3 in index` must answer False, not fail inside the tokenizer
            raise KeyError(word)
        key = word.lower()
        if key not in self._cache:
            ids = self._owner._encode(key) if key.strip() else []
            self._cache[key] = ids[0] if len(ids) == 1 else None
        found = self._cache[key]
        if found is None:
            raise KeyError(word)
        return found

    def _whole_words(self) -> list[str]:
        if self._words is None:
            to_byte = {symbol: b for b, symbol in byte_symbols().items()}
            candidates: list[str] = []
            for token in sorted(self._owner._tok.get_vocab(with_added_tokens=False)):
                stem = token[: -len(SUFFIX)] if token.endswith(SUFFIX) else ""
                if not stem or any(ch not in to_byte for ch in stem):
                    continue
                try:
                    candidates.append(bytes(to_byte[ch] for ch in stem).decode("utf-8"))
                except UnicodeDecodeError:
                    continue  # a piece of a multi-byte character is no word a user can type
            # only words that are their own lower case: lookups lower-case, so others would not be keys
            candidates = [w for w in candidates if w == w.lower() and w.strip()]
            encoded = self._owner._tok.encode_batch(candidates, add_special_tokens=False)
            special = (self._owner.bos, self._owner.eos)
            self._words = []
            for word, enc in zip(candidates, encoded, strict=True):
                single = len(enc.ids) == 1 and enc.ids[0] not in special
                self._cache[word] = enc.ids[0] if single else None
                if single:
                    self._words.append(word)
        return self._words

    def __iter__(self) -> Iterator[str]:
        return iter(self._whole_words())

    def __len__(self) -> int:
        return len(self._whole_words())


class ClipTokenizer(PromptEncoding):
    """CLIP BPE with the word-level `Tokenizer`'s API: `ids`, `unconditional_ids`, `embed`, `words`, `index`."""

    lowercase = True  # CLIP's normalizer lower-cases, and placeholders match case-insensitively

    def __init__(self, asset: dict[str, Any]) -> None:
        try:
            if asset["kind"] != KIND:
                raise ValueError(f"kind {asset['kind']!r}")
            serialized = str(asset["tokenizer"])
            self.bos, self.eos, self.pad = int(asset["bos"]), int(asset["eos"]), int(asset["pad"])
            self.max_tokens = int(asset["max_tokens"])
        except (KeyError, TypeError, ValueError) as e:
            raise EdgeSDKError(f"clip_tokenizer asset is malformed (missing or bad {e}); "
                               "re-export the bundle") from None
        if self.max_tokens < 2:
            raise EdgeSDKError(f"clip_tokenizer max_tokens is {self.max_tokens}; it must leave room for bos and eos")
        lib = _tokenizers()
        try:
            self._tok = lib.Tokenizer.from_str(serialized)
        except Exception as e:  # the Rust side raises a bare Exception for any parse error
            raise EdgeSDKError(f"clip_tokenizer asset holds no valid tokenizer ({e}); re-export the bundle") from None
        # an asset written by other code may still cut or pad: both would hide a too-long prompt
        self._tok.no_truncation()
        self._tok.no_padding()
        self.index: Mapping[str, int] = _Index(self)

    @classmethod
    def from_bundle(cls, bundle: Bundle) -> ClipTokenizer:
        return cls(bundle.asset_json("clip_tokenizer"))

    @property
    def max_words(self) -> int:
        return self.max_tokens - 2  # bos and eos take two positions; counted in BPE tokens, not words

    def words(self, prompt: str) -> list[str]:
        """Lower-cased words and `<placeholder>` words, in order (for "does the caption name the placeholder")."""
        words: list[str] = []
        for piece in _PLACEHOLDER.split(prompt.lower()):
            if _PLACEHOLDER.fullmatch(piece):
                words.append(piece)
            else:
                words += _PUNCTUATION.sub(" ", piece).split()
        return words

    def _encode(self, text: str) -> list[int]:
        ids = list(self._tok.encode(text, add_special_tokens=False).ids)
        if self.bos in ids or self.eos in ids:
            # only a broken vocabulary (merges that build a special token) gets here: refuse, never send it on
            raise EdgeSDKError(f"the CLIP tokenizer turned the text {text!r} into a bos/eos token; "
                               "the bundle's tokenizer is broken, re-export it")
        return ids

    def _slots(self, prompt: str, learned: dict[str, np.ndarray]) -> list[int | str]:
        """Token id per BPE token, or the placeholder name where its learned vectors go. Checks every user error."""
        slots: list[int | str] = []
        text = ""  # text since the last learned placeholder: tokenized in one piece, as CLIP would see it
        for piece in _PLACEHOLDER.split(prompt):
            if _PLACEHOLDER.fullmatch(piece) and piece.lower() in learned:
                slots += self._encode(text) if text.strip() else []
                slots.append(piece.lower())
                text = ""
            else:
                text += piece  # an unknown <word> is plain text: the byte-level BPE can spell anything
        slots += self._encode(text) if text.strip() else []
        if not slots:
            raise EdgeSDKError("empty prompt: describe the image in a few words (the empty prompt is only used "
                               "internally for guidance)")
        positions = sum(len(learned[s]) if isinstance(s, str) else 1 for s in slots)
        if positions > self.max_words:
            raise EdgeSDKError(f"prompt is too long: {positions} tokens, this model takes at most {self.max_words}; "
                               "shorten it")
        return slots


__all__ = ["ClipTokenizer", "byte_symbols", "clip_tokenizer_asset"]
