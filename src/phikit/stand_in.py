"""A random-weight model of Phi-4-mini's exact shape, for speed, memory, LoRA-target and format tests.

Real Phi-4-mini weights are 7.7 GB and not always at hand (no hub access in CI); a ``Phi3ForCausalLM``
with the same configuration has the same parameter count, memory footprint, kernels and module names.
"""

from __future__ import annotations

from pathlib import Path

# microsoft/Phi-4-mini-instruct config.json's `rope_scaling` (LongRoPE: 48 = 96 rotary dims / 2 factors each;
# sequences over original_max_position_embeddings=4096 switch from the short to the long factors).
PHI4_MINI_ROPE_SCALING = {
    "type": "longrope",
    "short_factor": [1.0] * 48,
    "long_factor": [1, 1.118320672, 1.250641126, 1.398617824, 1.564103225, 1.74916897, 1.956131817, 2.187582649,
                    2.446418898, 2.735880826, 3.059592084, 3.421605075, 3.826451687, 4.279200023, 4.785517845,
                    5.351743533, 5.984965424, 6.693110555, 7.485043894, 8.370679318, 9.36110372, 10.4687158,
                    11.70738129, 13.09260651, 14.64173252, 16.37415215, 18.31155283, 20.47818807, 22.90118105,
                    25.61086418, 28.64115884, 32.03, 32.1, 32.13, 32.23, 32.6, 32.61, 32.64, 32.66, 32.7, 32.71,
                    32.93, 32.97, 33.28, 33.49, 33.5, 44.16, 47.77],
}
# From microsoft/Phi-4-mini-instruct's config.json (model card: 3.8B, 200K vocabulary, GQA, tied embeddings,
# LongRoPE to 128K).
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
    original_max_position_embeddings=4096,
    rope_scaling=PHI4_MINI_ROPE_SCALING,
)
# The stand-in tokenizer's <|endoftext|> is id 0 (the real one is 199999).
STAND_IN_TOKEN_IDS = dict(bos_token_id=0, eos_token_id=0, pad_token_id=0)
SPECIAL_TOKENS = ["<|endoftext|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>", "<|tool|>", "<|/tool|>",
                  "<|tool_call|>", "<|/tool_call|>"]


def phi4_mini_config(**overrides):
    """``Phi3Config`` with Phi-4-mini's shape (overrides allowed, e.g. fewer layers for CPU tests)."""
    import copy

    from transformers import Phi3Config

    return Phi3Config(**copy.deepcopy({**PHI4_MINI_SHAPE, **STAND_IN_TOKEN_IDS, **overrides}))  # configs edit dicts


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


def save_random_phi4_mini(path: str | Path, *, device: str = "cpu", seed: int = 0, text_only: bool = False,
                          **overrides) -> Path:
    """Write a random-weight Phi-4-mini-shaped checkpoint (bf16 safetensors + tokenizer) to ``path``.

    Args:
        path: target directory.
        device: where to initialise (``cuda`` is much faster for the full 3.8B shape).
        text_only: zero the (tied) embedding rows of the stand-in tokenizer's special tokens and of the ids it
            does not have, so greedy output is always decodable text and never ends early — what a serving
            benchmark that streams text needs. Shapes and cost are unchanged.
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
    tok = tiny_tokenizer()
    if text_only:
        special = tok.convert_tokens_to_ids(SPECIAL_TOKENS)
        with torch.no_grad():
            for w in {id(m.weight): m.weight for m in (model.get_input_embeddings(), model.lm_head)}.values():
                w[len(tok):] = 0
                w[special] = 0
    model.save_pretrained(path)
    tok.save_pretrained(path)
    del model
    return path


def llama_as_phi3(llama, *, dtype=None, original_max_position: int = 4096, long_factor_max: float = 2.0):
    """The same trained network as a ``Phi3ForCausalLM`` (fused ``qkv_proj`` and ``gate_up_proj``), with LongRoPE.

    Llama (SmolLM2) and Phi-3 compute the same function apart from the fused projections, so a trained Llama
    becomes a Phi-3-family checkpoint with real, confident logits — what the fast path's greedy-equality check
    needs (random weights leave top-2 logit gaps inside bf16 rounding). A ``longrope`` scaling is added so both
    factor sets are exercised: short factors 1.0, long factors rising geometrically from 1.0 to
    ``long_factor_max`` (a mild stretch the model still reads), switching at ``original_max_position``.

    Args:
        llama: a ``LlamaForCausalLM`` (fp32 or bf16; full rotary, no biases).
        dtype: the weights' dtype (None: ``llama``'s). The rotary frequencies stay fp32, as ``from_pretrained``
            leaves them, so outputs equal a checkpoint loaded the usual way.
        original_max_position: LongRoPE's switch point, below the model's ``max_position_embeddings``.

    Returns:
        A ``Phi3ForCausalLM`` on the CPU; its tokenizer is the Llama model's.

    Raises:
        ValueError: attention or MLP biases (Phi-3 has none), or a switch point past the context window.
    """
    import torch
    from transformers import Phi3Config, Phi3ForCausalLM

    c = llama.config
    if getattr(c, "attention_bias", False) or getattr(c, "mlp_bias", False):
        raise ValueError("Phi-3 has no attention or MLP biases; this Llama model has them")
    if original_max_position >= c.max_position_embeddings:
        raise ValueError(f"original_max_position {original_max_position} must be below {c.max_position_embeddings}")
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    half = head_dim // 2
    rope = dict(getattr(c, "rope_parameters", None) or {})
    theta = float(rope.get("rope_theta") or getattr(c, "rope_theta", 10000.0))
    cfg = Phi3Config(
        vocab_size=c.vocab_size, hidden_size=c.hidden_size, intermediate_size=c.intermediate_size,
        num_hidden_layers=c.num_hidden_layers, num_attention_heads=c.num_attention_heads,
        num_key_value_heads=c.num_key_value_heads, rms_norm_eps=c.rms_norm_eps, rope_theta=theta,
        max_position_embeddings=c.max_position_embeddings, original_max_position_embeddings=original_max_position,
        rope_scaling={"type": "longrope", "short_factor": [1.0] * half,
                      "long_factor": [long_factor_max ** (i / (half - 1)) for i in range(half)]},
        partial_rotary_factor=1.0, tie_word_embeddings=bool(c.tie_word_embeddings),
        bos_token_id=c.bos_token_id, eos_token_id=c.eos_token_id, pad_token_id=c.pad_token_id,
    )
    src = llama.state_dict()
    sd = {k: v for k, v in src.items() if not any(p in k for p in ("q_proj", "k_proj", "v_proj", "gate_proj", "up_proj"))}
    for i in range(c.num_hidden_layers):
        a, m = f"model.layers.{i}.self_attn.", f"model.layers.{i}.mlp."
        sd[a + "qkv_proj.weight"] = torch.cat([src[a + p + ".weight"] for p in ("q_proj", "k_proj", "v_proj")])
        sd[m + "gate_up_proj.weight"] = torch.cat([src[m + "gate_proj.weight"], src[m + "up_proj.weight"]])
    with torch.device("meta"):
        phi3 = Phi3ForCausalLM(cfg)
    phi3.load_state_dict(sd, strict=not cfg.tie_word_embeddings, assign=True)
    if cfg.tie_word_embeddings:
        phi3.tie_weights()
    phi3 = phi3.to(dtype or next(llama.parameters()).dtype).eval()
    # the rotary buffers were built on the meta device (and .to() would round them): fresh fp32 ones
    rotary = phi3.model.rotary_emb
    for name, buf in type(rotary)(config=cfg).named_buffers():
        rotary.register_buffer(name, buf, persistent=False)
    return phi3
