"""Tokenizer rules from docs/bundle-format.md, and learned-placeholder splicing."""

from __future__ import annotations

import numpy as np
import pytest

from edgesdk.runtime import EdgeSDKError, Tokenizer

VOCAB = {"tokens": ["<pad>", "<bos>", "<eos>", "a", "red", "cat", "on", "background"],
         "pad": "<pad>", "bos": "<bos>", "eos": "<eos>", "max_tokens": 8, "lowercase": True}
TABLE = np.arange(8 * 3, dtype=np.float32).reshape(8, 3)  # row i is [3i, 3i+1, 3i+2]


def test_ids_lowercase_punctuation_padding() -> None:
    tok = Tokenizer(VOCAB)
    np.testing.assert_array_equal(tok.ids("A red, cat!"), [1, 3, 4, 5, 2, 0, 0, 0])
    assert tok.ids("cat").dtype == np.int64
    np.testing.assert_array_equal(tok.unconditional_ids(), [1, 2, 0, 0, 0, 0, 0, 0])


def test_unknown_words_are_all_named() -> None:
    with pytest.raises(EdgeSDKError, match=r'"dog", "blue".*edgesdk inspect BUNDLE'):
        Tokenizer(VOCAB).ids("a dog on blue background")


@pytest.mark.parametrize("prompt", ["", "   ", " ,.! "])
def test_empty_prompt(prompt: str) -> None:
    with pytest.raises(EdgeSDKError, match="empty prompt"):
        Tokenizer(VOCAB).ids(prompt)


def test_too_many_words_names_limit() -> None:
    with pytest.raises(EdgeSDKError, match="at most 6"):
        Tokenizer(VOCAB).ids("a red cat on a red cat")


def test_embed_looks_up_rows() -> None:
    emb = Tokenizer(VOCAB).embed("red cat", TABLE)
    assert emb.shape == (8, 3) and emb.dtype == np.float32
    np.testing.assert_array_equal(emb, TABLE[[1, 4, 5, 2, 0, 0, 0, 0]])


def test_placeholder_splices_k_vectors() -> None:
    tok = Tokenizer(VOCAB)
    me = np.array([[100, 101, 102], [200, 201, 202]], dtype=np.float32)
    emb = tok.embed("a <me>, on background.", TABLE, learned={"<me>": me})
    np.testing.assert_array_equal(emb[:2], TABLE[[1, 3]])
    np.testing.assert_array_equal(emb[2:4], me)
    np.testing.assert_array_equal(emb[4:], TABLE[[6, 7, 2, 0]])
    # placeholders are not vocabulary words: without learned vectors they are unknown
    with pytest.raises(EdgeSDKError, match='"<me>"'):
        tok.ids("a <me>")
    # k counts against the length limit
    with pytest.raises(EdgeSDKError, match="7 tokens"):
        tok.embed("<me> <me> <me> cat", TABLE, learned={"<me>": me})


def test_placeholder_width_checked() -> None:
    with pytest.raises(EdgeSDKError, match=r"expected \(k, 3\)"):
        Tokenizer(VOCAB).embed("<me>", TABLE, learned={"<me>": np.zeros((1, 4))})
