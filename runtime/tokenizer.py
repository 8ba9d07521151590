"""Word-level tokenizer from `assets/vocabulary.json` (rules in docs/bundle-format.md).

A prompt is lower-cased, `,.;:!?` become spaces, it is split on white space, and the ids are
`[bos] words... [eos] [pad]...` up to `max_tokens`. Placeholders such as `<me>` (learned on device, not in
the vocabulary) are cut out first, because punctuation handling must not touch their angle brackets.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import numpy as np

from edgesdk.runtime.bundle import Bundle
from edgesdk.runtime.errors import EdgeSDKError

if TYPE_CHECKING:
    from edgesdk.runtime.clip_tokenizer import ClipTokenizer

_PUNCTUATION = re.compile(r"[,.;:!?]")
_PLACEHOLDER = re.compile(r"(<[^<>\s]+>)")  # capturing group: re.split keeps the placeholders


class PromptEncoding:
    """What every bundle tokenizer shares: a prompt becomes slots (token ids, or a learned placeholder's name), then
    ``[bos] slots [eos] [pad]...`` as ids or as embedding rows. Subclasses give ``_slots``, the special ids,
    ``max_tokens`` and ``lowercase``."""

    bos: int
    eos: int
    pad: int
    max_tokens: int
    lowercase: bool

    def _slots(self, prompt: str, learned: dict[str, np.ndarray]) -> list[int | str]:
        raise NotImplementedError

    def _pad(self, body: list[int]) -> np.ndarray:
        ids = [self.bos, *body, self.eos]
        return np.array(ids + [self.pad] * (self.max_tokens - len(ids)), dtype=np.int64)

    def ids(self, prompt: str) -> np.ndarray:
        """(max_tokens,) int64 ids of a user prompt (empty prompts are refused)."""
        return self._pad([int(slot) for slot in self._slots(prompt, {})])

    def unconditional_ids(self) -> np.ndarray:
        """Ids of the empty prompt, the classifier-free guidance input."""
        return self._pad([])

    def embed(self, prompt: str, table: np.ndarray, learned: dict[str, np.ndarray] | None = None) -> np.ndarray:
        """(max_tokens, width) float32 embeddings; each `learned` placeholder splices its (k, width) rows in."""
        vectors = {self._key(name): _as_rows(value, table.shape[1], name) for name, value in (learned or {}).items()}
        rows: list[np.ndarray] = [table[self.bos][None]]
        for slot in self._slots(prompt, vectors):
            rows.append(vectors[slot] if isinstance(slot, str) else table[slot][None])
        rows.append(table[self.eos][None])
        rows += [table[self.pad][None]] * (self.max_tokens - sum(len(r) for r in rows))
        return np.concatenate(rows).astype(np.float32)

    def _key(self, placeholder: str) -> str:
        # prompts are lower-cased, so "<Me>" in the learned dict must match "<me>" in the prompt
        return placeholder.lower() if self.lowercase else placeholder


class Tokenizer(PromptEncoding):
    def __init__(self, vocabulary: dict[str, Any]) -> None:
        try:
            self.tokens: list[str] = [str(t) for t in vocabulary["tokens"]]
            self.max_tokens = int(vocabulary["max_tokens"])
            special = [vocabulary["pad"], vocabulary["bos"], vocabulary["eos"]]
        except (KeyError, TypeError, ValueError) as e:
            raise EdgeSDKError(f"vocabulary.json is malformed (missing or bad {e}); re-export the bundle") from None
        self.lowercase = bool(vocabulary.get("lowercase", True))
        self.index = {token: i for i, token in enumerate(self.tokens)}
        unknown = [s for s in special if s not in self.index]
        if unknown:
            raise EdgeSDKError(f"vocabulary.json names special tokens {unknown} that are not in its token list; "
                               "re-export the bundle")
        self.pad, self.bos, self.eos = (self.index[s] for s in special)
        if self.max_tokens < 2:
            raise EdgeSDKError(f"vocabulary max_tokens is {self.max_tokens}; it must leave room for bos and eos")

    @classmethod
    def from_bundle(cls, bundle: Bundle) -> Tokenizer | ClipTokenizer:
        """The bundle's tokenizer: CLIP BPE when it ships a `clip_tokenizer` asset (imported Stable Diffusion),
        else the word-level vocabulary. Both have the same API, so callers need not care which."""
        if "clip_tokenizer" in bundle.manifest.get("assets", {}):
            # imported here: clip_tokenizer imports this module, and word-level bundles never need it
            from edgesdk.runtime.clip_tokenizer import ClipTokenizer

            return ClipTokenizer.from_bundle(bundle)
        return cls(bundle.asset_json("vocabulary"))

    @property
    def max_words(self) -> int:
        return self.max_tokens - 2  # bos and eos take two positions

    def words(self, prompt: str) -> list[str]:
        """Split a prompt into vocabulary words and `<placeholder>` words, in order."""
        text = prompt.lower() if self.lowercase else prompt
        words: list[str] = []
        for piece in _PLACEHOLDER.split(text):
            if _PLACEHOLDER.fullmatch(piece):
                words.append(piece)
            else:
                words += _PUNCTUATION.sub(" ", piece).split()
        return words

    def _slots(self, prompt: str, learned: dict[str, np.ndarray]) -> list[int | str]:
        """Token id per word, or the placeholder name where a learned vector goes. Checks every user error."""
        words = self.words(prompt)
        if not words:
            raise EdgeSDKError("empty prompt: describe the image in a few words (the empty prompt is only used "
                               "internally for guidance)")
        unknown = [w for w in words if w not in learned and w not in self.index]
        if unknown:
            quoted = ", ".join(f'"{w}"' for w in dict.fromkeys(unknown))
            raise EdgeSDKError(f"words not in the model's vocabulary: {quoted}; `edgesdk inspect BUNDLE` "
                               "lists the vocabulary")
        positions = sum(len(learned[w]) if w in learned else 1 for w in words)
        if positions > self.max_words:
            raise EdgeSDKError(f"prompt is too long: {positions} tokens, this model takes at most {self.max_words}; "
                               "shorten it")
        return [w if w in learned else self.index[w] for w in words]


def _as_rows(value: np.ndarray, width: int, name: str) -> np.ndarray:
    rows = np.asarray(value, dtype=np.float32)
    rows = rows[None] if rows.ndim == 1 else rows  # a single vector is a one-vector token
    if rows.ndim != 2 or rows.shape[1] != width or len(rows) == 0:
        raise EdgeSDKError(f"learned vectors for {name!r} have shape {np.shape(value)}; expected (k, {width})")
    if not _PLACEHOLDER.fullmatch(name):
        raise EdgeSDKError(f"learned token name {name!r} must look like <word> so prompts can refer to it")
    return rows
