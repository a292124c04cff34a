"""Streaming detokenization: the byte-table path gives the same deltas as re-decoding, and is refused where
the tokenizer is not byte-level."""

from __future__ import annotations

import random

import pytest

from phikit.engines.base import (
    ByteDetokenizer,
    IncrementalDetokenizer,
    SamplingParams,
    TextDelta,
    stream_tokens,
)
from phikit.engines.local import byte_table
from phikit.stand_in import tiny_tokenizer


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


def deltas(detok, ids):
    return [detok.add(i) for i in ids] + [detok.flush()]


def test_byte_table_deltas_equal_window_decoding_on_random_ids(tok):
    table = byte_table(tok)
    assert table is not None and len(table) == len(tok)
    decode = lambda ids: tok.decode(list(ids), skip_special_tokens=False)  # noqa: E731
    multibyte = tok.encode("héllo wörld 日本語 🎉", add_special_tokens=False)
    assert len(multibyte) > 10  # characters split across tokens, so incomplete UTF-8 is held back
    rng = random.Random(0)
    for _ in range(40):
        ids = [rng.randrange(len(tok)) for _ in range(40)] + multibyte
        rng.shuffle(ids)
        fast, slow = "".join(deltas(ByteDetokenizer(table, decode), ids)), "".join(
            deltas(IncrementalDetokenizer(decode), ids))
        assert fast == slow == decode(ids)


def test_byte_table_holds_back_a_split_character_and_streams_it_whole(tok):
    table = byte_table(tok)
    emoji = "🎉".encode()
    ids = [i for i, b in enumerate(table) if len(b) == 1 and b[0] in emoji]  # the 4 bytes, one token each
    order = [next(i for i in ids if table[i][0] == b) for b in emoji]
    detok = ByteDetokenizer(table, tok.decode)
    assert [detok.add(i) for i in order] == ["", "", "", "🎉"]
    detok = ByteDetokenizer(table, tok.decode)
    assert [detok.add(i) for i in order[:2]] == ["", ""] and detok.flush() == "\ufffd"  # cut short: as decode()


def test_ids_past_the_tokenizer_decode_as_the_tokenizer_does(tok):
    table = byte_table(tok)
    detok = ByteDetokenizer(table, lambda ids: tok.decode(list(ids)))
    assert detok.add(len(table) + 5) == tok.decode([len(table) + 5])


def test_a_tokenizer_that_is_not_byte_level_keeps_the_window_path():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    raw.decoder = decoders.WordPiece()
    raw.train_from_iterator(["the quick brown fox jumps over the lazy dog"] * 5,
                            trainers.WordPieceTrainer(vocab_size=60, special_tokens=["[UNK]"]))
    assert byte_table(PreTrainedTokenizerFast(tokenizer_object=raw)) is None


def test_stream_tokens_with_a_byte_table_streams_the_same_events(tok):
    text = "What is the capital of France? Paris. 日本 🎉"
    ids = tok.encode(text, add_special_tokens=False)
    decode = lambda x: tok.decode(list(x), skip_special_tokens=False)  # noqa: E731
    params = SamplingParams(max_new_tokens=len(ids) + 5, stop=("Paris",))

    def run(table):
        return [e for e in stream_tokens((i for i in ids), decode=decode, eos_ids=set(), prompt_tokens=3,
                                         params=params, token_bytes=table)]

    fast, slow = run(byte_table(tok)), run(None)
    assert [e.text for e in fast if isinstance(e, TextDelta)] == [e.text for e in slow if isinstance(e, TextDelta)]
    assert fast[-1].text == slow[-1].text == "What is the capital of France? " and fast[-1].finish_reason == "stop"
