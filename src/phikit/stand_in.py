"""A random-weight model of Phi-4-mini's exact shape, for speed, memory, LoRA-target and format tests.

Real Phi-4-mini weights are 7.7 GB and not always at hand (no hub access in CI); a ``Phi3ForCausalLM``
with the same configuration has the same parameter count, memory footprint, kernels and module names.
"""

from __future__ import annotations

from pathlib import Path

# From microsoft/Phi-4-mini-instruct's config.json (model card: 3.8B, 200K vocabulary, GQA, tied embeddings).
PHI4_MINI_SHAPE = dict(
    vocab_size=200064,
    hidden_size=3072,
    intermediate_size=8192,
    num_hidden_layers=32,
    num_attention_heads=24,
    num_key_value_heads=8,
    partial_rotary_factor=0.75,
    tie_word_embeddings=True,
    max_position_embeddings=131072,
    rope_theta=10000.0,
)
# The stand-in tokenizer's <|endoftext|> is id 0 (the real one is 199999).
STAND_IN_TOKEN_IDS = dict(bos_token_id=0, eos_token_id=0, pad_token_id=0)
SPECIAL_TOKENS = ["<|endoftext|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>", "<|tool|>", "<|/tool|>",
                  "<|tool_call|>", "<|/tool_call|>"]


def phi4_mini_config(**overrides):
    """``Phi3Config`` with Phi-4-mini's shape (overrides allowed, e.g. fewer layers for CPU tests)."""
    from transformers import Phi3Config

    return Phi3Config(**{**PHI4_MINI_SHAPE, **STAND_IN_TOKEN_IDS, **overrides})


def tiny_tokenizer():
    """A byte-level BPE tokenizer trained on a few sentences, with Phi-4-mini's special tokens.

    Stands in for Phi-4-mini's o200k-based tokenizer: ids stay far below 200064, which is all the
    stand-in model needs.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    corpus = ["The quick brown fox jumps over the lazy dog.", "What is the capital of France? Paris.",
              "You are a helpful assistant with some tools.", '{"name": "get_weather", "arguments": {}}'] * 20
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=600, special_tokens=SPECIAL_TOKENS,
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", bos_token="<|endoftext|>")


def save_random_phi4_mini(path: str | Path, *, device: str = "cpu", seed: int = 0, **overrides) -> Path:
    """Write a random-weight Phi-4-mini-shaped checkpoint (bf16 safetensors + tokenizer) to ``path``.

    Args:
        path: target directory.
        device: where to initialise (``cuda`` is much faster for the full 3.8B shape).
        **overrides: config changes, e.g. ``num_hidden_layers=2``.

    Returns:
        ``path``, loadable with ``phikit.load(str(path))``.
    """
    import torch
    from transformers import Phi3ForCausalLM

    path = Path(path)
    torch.manual_seed(seed)
    with torch.device(device):
        model = Phi3ForCausalLM(phi4_mini_config(**overrides)).to(torch.bfloat16)
    model.save_pretrained(path)
    tiny_tokenizer().save_pretrained(path)
    del model
    return path
