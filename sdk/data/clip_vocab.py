"""A small but real CLIP tokenizer folder (vocab.json, merges.txt, configs), written without any download.

Real CLIP vocabularies are 49408 entries learned from web text; tests and the random-weights Stable Diffusion
builder only need the same *format*: the 256 byte symbols, alone and as a word end ("a</w>"), merges that build
the chosen words whole, then the special tokens last. Any other text still tokenizes, into smaller pieces down
to single bytes, exactly as with the real vocabulary.
"""

from __future__ import annotations

import json
from pathlib import Path

from edgesdk.runtime.clip_tokenizer import DEFAULT_BOS, DEFAULT_EOS, SUFFIX, byte_symbols
from edgesdk.runtime.errors import EdgeSDKError

Pair = tuple[str, str]


def write_clip_tokenizer_files(folder: Path, words: list[str], pad: str | None = None, max_length: int = 77) -> Path:
    """Write a CLIP-format tokenizer that builds each of ``words`` (lower-cased) as one token; returns ``folder``.

    ``pad`` is the padding token (None: eos, as in SD-1; SD-2 folders use "!"); it must be a vocabulary entry."""
    folder = Path(folder)
    lowered = list(dict.fromkeys(w.lower() for w in words))  # first occurrence decides the order: deterministic
    bad = [w for w in lowered if not w.isalpha()]
    if bad:
        # CLIP's pre-tokenizer cuts digits and punctuation off letters, so such a "word" could never be one token
        raise EdgeSDKError(f"CLIP vocabulary words must be letters only; got {', '.join(map(repr, bad))}")
    symbols = byte_symbols()
    vocab: dict[str, int] = {}
    for token in [*symbols.values(), *(s + SUFFIX for s in symbols.values())]:
        vocab[token] = len(vocab)
    merges: list[Pair] = []
    ranks: dict[Pair, int] = {}
    for word in lowered:
        pieces = [symbols[b] for b in word.encode("utf-8")]
        for form in (pieces[:-1] + [pieces[-1] + SUFFIX], pieces):  # the word alone, and as a prefix of a longer one
            for pair in _merges_to_build(form, ranks):
                ranks[pair] = len(merges)
                merges.append(pair)
                vocab.setdefault(pair[0] + pair[1], len(vocab))
    for special in (DEFAULT_BOS, DEFAULT_EOS):
        vocab[special] = len(vocab)
    pad_token = DEFAULT_EOS if pad is None else pad
    if pad_token not in vocab:
        raise EdgeSDKError(f"pad token {pad_token!r} is not in the vocabulary; use None (eos) or a byte such as '!'")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    merges_text = "".join(f"{a} {b}\n" for a, b in merges)
    (folder / "merges.txt").write_text("#version: 0.2\n" + merges_text, encoding="utf-8")
    config = {"tokenizer_class": "CLIPTokenizer", "bos_token": DEFAULT_BOS, "eos_token": DEFAULT_EOS,
              "unk_token": DEFAULT_EOS, "pad_token": pad_token, "model_max_length": max_length,
              "do_lower_case": True, "errors": "replace"}
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    # the AddedToken dict form, as diffusers folders have it (tokenizer_config.json above uses plain strings)
    special_map = {key: {"content": value, "lstrip": False, "normalized": True, "rstrip": False, "single_word": False}
                   for key, value in (("bos_token", DEFAULT_BOS), ("eos_token", DEFAULT_EOS),
                                      ("unk_token", DEFAULT_EOS), ("pad_token", pad_token))}
    (folder / "special_tokens_map.json").write_text(json.dumps(special_map, indent=2) + "\n", encoding="utf-8")
    return folder


def _merges_to_build(form: list[str], ranks: dict[Pair, int]) -> list[Pair]:
    """Merges to append (after all of ``ranks``) so BPE turns ``form`` into one token.

    Appended merges rank last, so at every step of an earlier word the merge BPE picks is still an earlier one: the
    words already built keep their single token. Each appended merge joins the first two pieces of the current
    result, so the count drops by one each round."""
    added: list[Pair] = []
    local = dict(ranks)
    pieces = _bpe(form, local)
    while len(pieces) > 1:
        pair = (pieces[0], pieces[1])
        local[pair] = len(local)
        added.append(pair)
        pieces = _bpe(form, local)
    return added


def _bpe(pieces: list[str], ranks: dict[Pair, int]) -> list[str]:
    """Byte-pair encoding: repeatedly join every occurrence of the lowest-ranked adjacent pair."""
    pieces = list(pieces)
    while len(pieces) > 1:
        ranked = [(ranks[p], p) for p in zip(pieces, pieces[1:], strict=False) if p in ranks]
        if not ranked:
            break
        best = min(ranked)[1]
        joined: list[str] = []
        i = 0
        while i < len(pieces):
            if i + 1 < len(pieces) and (pieces[i], pieces[i + 1]) == best:
                joined.append(pieces[i] + pieces[i + 1])
                i += 2
            else:
                joined.append(pieces[i])
                i += 1
        pieces = joined
    return pieces
