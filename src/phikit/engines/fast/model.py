"""A Phi-3-family transformer (Phi-4-mini) for the fast GPU path, in gpt-fast's style.

One file you can read in one sitting: the KV cache lives in the model as buffers (allocated once, written in
place with ``index_copy_``, never copied per step), attention is PyTorch's SDPA, and the rotary tables
(LongRoPE's short and long factor sets, partial rotary) are precomputed buffers indexed by position, so the
one-token step has fixed shapes and addresses and can be captured in a CUDA graph. At batch 1 the step's
projections run a Triton GEMV (:mod:`.gemv`), everywhere else cuBLAS.

Module names mirror transformers' ``Phi3ForCausalLM`` (``model.layers.N.self_attn.qkv_proj`` ...) so a
checkpoint's state dict loads as is. The arithmetic follows transformers' Phi-3 code step by step (RMSNorm in
fp32, rotary tables in fp32 cast to the model dtype, ``gate, up = chunk(2)``), which is what the exactness
tests check against. Sources: pytorch-labs/gpt-fast ``model.py``; transformers ``modeling_phi3.py`` and
``modeling_rope_utils.py`` (LongRoPE: Ding et al. 2024, arXiv:2402.13753).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .gemv import Linear, linear


@dataclass(frozen=True)
class ModelArgs:
    """The shape and positional-encoding settings of a Phi-3-family model.

    Attributes:
        rotary_dim: dimensions of each head that rotate (``head_dim * partial_rotary_factor``; 96 of 128).
        original_max_position: LongRoPE's switch point: sequences longer than this use ``long_factor``.
        short_factor, long_factor: LongRoPE rescale factors, ``rotary_dim // 2`` each; None for plain RoPE.
        attention_factor: the scale LongRoPE puts on cos and sin (1.0 for plain RoPE).
    """

    vocab_size: int
    dim: int
    n_layer: int
    n_head: int
    n_kv_head: int
    head_dim: int
    intermediate_size: int
    norm_eps: float
    rope_theta: float
    rotary_dim: int
    max_position: int
    original_max_position: int
    short_factor: tuple[float, ...] | None = None
    long_factor: tuple[float, ...] | None = None
    attention_factor: float = 1.0
    tie_embeddings: bool = True

    @classmethod
    def from_hf(cls, cfg) -> ModelArgs:
        """Read a transformers ``Phi3Config`` (v4 ``rope_scaling`` or v5 ``rope_parameters``)."""
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        rope = dict(getattr(cfg, "rope_parameters", None) or getattr(cfg, "rope_scaling", None) or {})
        theta = float(rope.get("rope_theta") or getattr(cfg, "rope_theta", 10000.0))
        kind = rope.get("rope_type") or rope.get("type") or "default"
        orig = int(rope.get("original_max_position_embeddings") or getattr(cfg, "original_max_position_embeddings", 0)
                   or cfg.max_position_embeddings)
        short = long = None
        factor_scale = 1.0
        if kind in ("longrope", "su", "yarn"):
            short, long = tuple(map(float, rope["short_factor"])), tuple(map(float, rope["long_factor"]))
            # transformers' _compute_longrope_parameters: `factor`, else the context extension ratio, sets the scale.
            factor = float(rope.get("factor") or cfg.max_position_embeddings / orig)
            factor_scale = rope.get("attention_factor") or (
                1.0 if factor <= 1.0 else math.sqrt(1 + math.log(factor) / math.log(orig)))
        elif kind != "default":
            raise ValueError(f"rope type {kind!r} is not supported by the fast backend (default or longrope)")
        return cls(
            vocab_size=cfg.vocab_size, dim=cfg.hidden_size, n_layer=cfg.num_hidden_layers,
            n_head=cfg.num_attention_heads, n_kv_head=cfg.num_key_value_heads, head_dim=head_dim,
            intermediate_size=cfg.intermediate_size, norm_eps=cfg.rms_norm_eps, rope_theta=theta,
            rotary_dim=int(head_dim * getattr(cfg, "partial_rotary_factor", 1.0)),
            max_position=cfg.max_position_embeddings, original_max_position=orig,
            short_factor=short, long_factor=long, attention_factor=float(factor_scale),
            tie_embeddings=bool(getattr(cfg, "tie_word_embeddings", False)),
        )


def rope_table(args: ModelArgs, factors: tuple[float, ...] | None, length: int, dtype, device) -> torch.Tensor:
    """cos and sin for positions ``0..length-1``: [2, length, rotary_dim] in ``dtype``.

    Computed as transformers does (fp32 frequencies, ``cat(freqs, freqs)``, times the attention factor, then
    cast), so the values are bit-identical to its per-call ones.
    """
    exponents = torch.arange(0, args.rotary_dim, 2, dtype=torch.int64, device=device).float() / args.rotary_dim
    if factors is None:
        inv_freq = 1.0 / (args.rope_theta ** exponents)
    else:
        ext = torch.tensor(factors, dtype=torch.float32, device=device)
        inv_freq = 1.0 / (ext * args.rope_theta ** exponents)
    freqs = torch.outer(torch.arange(length, device=device).float(), inv_freq)  # [L, R/2]
    emb = torch.cat((freqs, freqs), dim=-1)  # [L, R]
    return torch.stack([emb.cos() * args.attention_factor, emb.sin() * args.attention_factor]).to(dtype)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    # x: [..., C] -> [..., C]; statistics in fp32, as transformers' Phi3RMSNorm
    h = x.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return weight * h.to(x.dtype)


def add_rms_norm(x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor, eps: float):
    # x, y: [..., C] -> (x + y, rms_norm(x + y)): the residual add and the next norm, one kernel when compiled
    h = x + y
    return h, rms_norm(h, weight, eps)


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    # x: [B, H, T, D]; cos, sin: [T, R] with R <= D -> [B, H, T, D] (partial rotary: the last D - R pass through)
    r = cos.shape[-1]
    x_rot, x_pass = x[..., :r], x[..., r:]
    half = torch.cat((-x_rot[..., r // 2:], x_rot[..., : r // 2]), dim=-1)
    return torch.cat([(x_rot * cos) + (half * sin), x_pass], dim=-1)


def rotate_qk(q, k, cos, sin):
    # q: [B, H, T, D]; k: [B, Hkv, T, D] -> both rotated
    return rotate(q, cos, sin), rotate(k, cos, sin)


def silu_mul(gate_up: torch.Tensor) -> torch.Tensor:
    # gate_up: [..., 2I] -> [..., I]; Phi-3's `gate, up = chunk(2)`, `up * silu(gate)`
    gate, up = gate_up.chunk(2, dim=-1)
    return up * F.silu(gate)


class Ops:
    """The elementwise pieces of a layer, as one namespace so the one-token step can use other versions.

    ``EAGER`` runs everywhere (and is what prefill uses, whatever its length); :func:`generate.compile_ops`
    sets ``STEP`` to ``torch.compile``'d versions (one fused kernel each instead of five to ten) for the
    fixed-shape decode step, and :func:`generate.compile_layers` sets ``STEP.layer`` to a compiled
    :func:`layer_step` (a whole layer of the step). The projections keep their own kernels either way (the
    Triton GEMV at batch 1, else cuBLAS).
    """

    def __init__(self, **fns):
        self.rms_norm = fns.get("rms_norm", rms_norm)
        self.add_rms_norm = fns.get("add_rms_norm", add_rms_norm)
        self.rotate_qk = fns.get("rotate_qk", rotate_qk)
        self.silu_mul = fns.get("silu_mul", silu_mul)
        self.layer = fns.get("layer")  # None: the step runs Block.forward layer by layer


EAGER = Ops()
STEP = Ops()
# The one-token step's attention: "matmul" (two batched matmuls, softmax in fp32) measured 3% faster per step
# than "sdpa" on an H200 (cuDNN's kernel for 3-row queries); bench/gpu_fast_bench.py times both.
DECODE_ATTENTION = "matmul"


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.weight, self.eps)


class Attention(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.args = args
        self.qkv_proj = Linear(args.dim, (args.n_head + 2 * args.n_kv_head) * args.head_dim)
        self.o_proj = Linear(args.n_head * args.head_dim, args.dim)
        self.k_cache: torch.Tensor | None = None  # [B, Hkv, S, D], set by Transformer.setup_caches
        self.v_cache: torch.Tensor | None = None

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, input_pos: torch.Tensor,
                mask: torch.Tensor | None, ops: Ops = EAGER, slot: int = 0, start: int = 0,
                rows: torch.Tensor | None = None) -> torch.Tensor:
        # x: [B, T, C] -> [B, T, C].
        # Prefill (mask None): cos, sin [T, R]; input_pos [T] = start .. start+T-1; rows slot .. slot+B-1 of the
        #   cache; causal attention over the cached [0, start) and the T new tokens.
        # Decode (mask [B, 1, 1, S], 0 / -inf): T == 1; cos, sin [B, 1, 1, R]; input_pos [B], each row's own
        #   position (slots at different lengths); rows 0 .. B-1; attention over cache positions [0, S).
        # Rows prefill (rows [B] given, mask [B, 1, T, S] bool): row i is cache row rows[i], its tokens at
        #   input_pos[i] ([B, T]; padding at the scratch position); cos, sin [B, 1, T, R]; attention over
        #   the row's cache positions [0, S) allowed by the mask (its cached prefix and its own earlier tokens).
        a = self.args
        b, t, _ = x.shape
        nq, nk = a.n_head * a.head_dim, a.n_kv_head * a.head_dim
        qkv = self.qkv_proj(x)
        q = qkv[..., :nq].view(b, t, a.n_head, a.head_dim).transpose(1, 2)  # [B, H, T, D]
        k = qkv[..., nq: nq + nk].view(b, t, a.n_kv_head, a.head_dim).transpose(1, 2)  # [B, Hkv, T, D]
        v = qkv[..., nq + nk:].view(b, t, a.n_kv_head, a.head_dim).transpose(1, 2)
        q, k = ops.rotate_qk(q, k, cos, sin)
        rep = a.n_head // a.n_kv_head
        if rows is not None:
            self.k_cache[rows[:, None], :, input_pos] = k.transpose(1, 2)  # [B, T, Hkv, D] at each row's positions
            self.v_cache[rows[:, None], :, input_pos] = v.transpose(1, 2)
            kv_len = mask.shape[-1]
            k, v = self.k_cache[rows, :, :kv_len], self.v_cache[rows, :, :kv_len]  # [B, Hkv, S, D]
            k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # [B, H, T, D]
        elif mask is None:
            self.k_cache[slot: slot + b].index_copy_(2, input_pos, k)
            self.v_cache[slot: slot + b].index_copy_(2, input_pos, v)
            if start:  # prefix reuse: the first `start` positions' keys and values are already in the slot
                k, v = self.k_cache[slot: slot + b, :, : start + t], self.v_cache[slot: slot + b, :, : start + t]
            k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
            if start:
                allowed = torch.arange(start + t, device=x.device) <= input_pos[:, None]  # [T, start + T]
                y = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
            else:
                y = F.scaled_dot_product_attention(q, k, v, is_causal=t > 1)  # [B, H, T, D]
        else:
            rows = torch.arange(b, device=x.device)
            self.k_cache[rows, :, input_pos] = k[:, :, 0]  # [B, Hkv, D] at each row's own position
            self.v_cache[rows, :, input_pos] = v[:, :, 0]
            # GQA without copying the cache: the `rep` query heads that share a KV head become its query rows.
            qg = q.reshape(b, a.n_kv_head, rep * t, a.head_dim)
            kv_len = mask.shape[-1]
            k, v = self.k_cache[:b, :, :kv_len], self.v_cache[:b, :, :kv_len]
            if DECODE_ATTENTION == "sdpa":
                y = F.scaled_dot_product_attention(qg, k, v, attn_mask=mask)
            else:  # "matmul": two batched matmuls and a softmax (fp32), as transformers' eager attention
                w = torch.softmax((qg @ k.transpose(-1, -2)) * a.head_dim ** -0.5 + mask, dim=-1, dtype=torch.float32)
                y = w.to(v.dtype) @ v
            y = y.reshape(b, a.n_head, t, a.head_dim)
        return self.o_proj(y.transpose(1, 2).reshape(b, t, nq))


class MLP(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.gate_up_proj = Linear(args.dim, 2 * args.intermediate_size)
        self.down_proj = Linear(args.intermediate_size, args.dim)

    def forward(self, x: torch.Tensor, ops: Ops = EAGER) -> torch.Tensor:
        return self.down_proj(ops.silu_mul(self.gate_up_proj(x)))


class Block(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.self_attn = Attention(args)
        self.mlp = MLP(args)
        self.input_layernorm = RMSNorm(args.dim, args.norm_eps)
        self.post_attention_layernorm = RMSNorm(args.dim, args.norm_eps)

    def forward(self, x, cos, sin, input_pos, mask, slot: int = 0, start: int = 0, rows=None):
        # x: [B, T, C] -> [B, T, C]; the one-token step (a mask, no rows) uses the STEP pieces
        ops = EAGER if mask is None or rows is not None else STEP
        n1, n2 = self.input_layernorm, self.post_attention_layernorm
        attn = self.self_attn(ops.rms_norm(x, n1.weight, n1.eps), cos, sin, input_pos, mask, ops, slot, start, rows)
        h, normed = ops.add_rms_norm(x, attn, n2.weight, n2.eps)
        return h + self.mlp(normed, ops)


def layer_step(layer: Block, x: torch.Tensor, normed: torch.Tensor, next_norm: torch.Tensor, cos, sin,
               input_pos: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One layer of the one-token step, ending with the next layer's input norm (``next_norm``: its weight, or
    the final norm's after the last layer), so a compiled layer fuses the residual add with that norm.

    x: [B, 1, C] the residual stream; normed: ``input_layernorm(x)`` -> (x', next_norm(x')), both [B, 1, C].
    The same arithmetic as :meth:`Block.forward` with the eager pieces. Every layer has the same shapes, so a
    ``torch.compile``'d ``layer_step`` is compiled once and reused by all of them (PyTorch's "regional
    compilation" recipe: tutorials/recipes/regional_compilation).
    """
    attn = layer.self_attn(normed, cos, sin, input_pos, mask)
    n2 = layer.post_attention_layernorm
    h, normed2 = add_rms_norm(x, attn, n2.weight, n2.eps)
    return add_rms_norm(h, layer.mlp(normed2), next_norm, n2.eps)


class Decoder(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.embed_tokens = nn.Embedding(args.vocab_size, args.dim)
        self.layers = nn.ModuleList(Block(args) for _ in range(args.n_layer))
        self.norm = RMSNorm(args.dim, args.norm_eps)


class Transformer(nn.Module):
    """Phi-3-family causal LM with a static KV cache.

    Call :meth:`setup_caches` once (and again to grow it) before the first forward.
    """

    def __init__(self, args: ModelArgs):
        super().__init__()
        self.args = args
        self.model = Decoder(args)
        self.lm_head = None if args.tie_embeddings else Linear(args.dim, args.vocab_size)
        self.max_batch = self.max_len = 0
        self.cache_version = 0  # bumped when the cache is reallocated (captured graphs then go stale)

    @property
    def device(self) -> torch.device:
        return self.model.embed_tokens.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.embed_tokens.weight.dtype

    def setup_caches(self, max_batch: int, max_len: int) -> None:
        """Allocate (or grow) the KV cache to ``[max_batch, Hkv, max_len, D]`` per layer, and the rotary tables.

        Growing reallocates, so any CUDA graph captured before must be captured again.
        """
        if max_batch <= self.max_batch and max_len <= self.max_len:
            return
        with torch.inference_mode(False):  # plain tensors, so in-place writes also work outside inference mode
            self._allocate(max(max_batch, self.max_batch), max(max_len, self.max_len))

    def _allocate(self, max_batch: int, max_len: int) -> None:
        a, dev, dt = self.args, self.device, self.dtype
        self.max_batch, self.max_len = max_batch, max_len
        self.cache_version += 1
        for layer in self.model.layers:
            attn = layer.self_attn
            attn.k_cache = attn.v_cache = None  # free the old cache before allocating the new one
            # one position more than asked, never read: a step's cache slice [0, S) is then never the whole
            # buffer, so one compiled layer serves every S (a whole-buffer slice is a view where a shorter one
            # is not, and dynamo compiled the two apart: a compile at a request's first use of the largest bucket)
            shape = (self.max_batch, a.n_kv_head, self.max_len + 1, a.head_dim)
            attn.k_cache = torch.zeros(shape, dtype=dt, device=dev)
            attn.v_cache = torch.zeros(shape, dtype=dt, device=dev)
        # transformers switches LongRoPE's factor set on the sequence length of each forward: a prefill of
        # T > original_max_position uses `long` at every position; one-token steps use `long` from position
        # original_max_position on. `step_rope` is that per-position choice, `long_rope` the long prefill's.
        short = rope_table(a, a.short_factor, self.max_len, dt, dev)
        if a.long_factor is None:
            self.step_rope = self.long_rope = short
        else:
            self.long_rope = rope_table(a, a.long_factor, self.max_len, dt, dev)
            cut = min(a.original_max_position, self.max_len)
            self.step_rope = torch.cat([short[:, :cut], self.long_rope[:, cut:]], dim=1)

    def logits(self, h: torch.Tensor, normed: bool = False) -> torch.Tensor:
        # h: [B, T, C] (``normed``: already through the final norm) -> [B, T, V]
        h = h if normed else self.model.norm(h)
        return linear(h, self.model.embed_tokens.weight) if self.lm_head is None else self.lm_head(h)

    def forward(self, idx: torch.Tensor, input_pos: torch.Tensor, kv_len: int | None = None,
                last_only: bool = True, slot: int = 0, start: int = 0) -> torch.Tensor:
        """Logits for ``idx``, writing its keys and values into the cache.

        Prefill (``kv_len`` None): idx [B, T] at positions ``input_pos`` [T] (= start .. start+T-1) into cache
        rows ``slot`` .. ``slot``+B-1; ``start`` > 0 reuses the row's cached first ``start`` positions.
        One-token step (``kv_len`` given): idx [B, 1], ``input_pos`` [B] (each row's position), cache rows
        0 .. B-1, attention over cache positions [0, kv_len).
        Returns logits [B, 1, V] (last position) or [B, T, V] (``last_only`` False).
        """
        t = idx.shape[1]
        long_prefill = kv_len is None and start + t > self.args.original_max_position
        rope = (self.long_rope if long_prefill else self.step_rope)[:, input_pos]  # [2, T, R] or [2, B, R]
        mask = None
        if kv_len is not None:  # one-token step: each row attends to cache positions <= its own (additive mask)
            future = torch.arange(kv_len, device=idx.device) > input_pos[:, None]  # [B, S]
            mask = torch.zeros(idx.shape[0], 1, 1, kv_len, dtype=self.dtype, device=idx.device)
            mask = mask.masked_fill(future[:, None, None, :], float("-inf"))
            rope = rope[:, :, None, None, :]  # [2, B, 1, 1, R]: broadcast over heads and the one position
        x = self.model.embed_tokens(idx)
        if mask is not None and STEP.layer is not None:  # the step through compiled layers (compile_layers)
            torch._dynamo.maybe_mark_dynamic(mask, 3)  # the cache length: one compile for every bucket
            layers, eps = self.model.layers, self.args.norm_eps
            normed = rms_norm(x, layers[0].input_layernorm.weight, eps)
            nexts = [layer.input_layernorm.weight for layer in layers[1:]] + [self.model.norm.weight]
            for layer, next_norm in zip(layers, nexts):
                x, normed = STEP.layer(layer, x, normed, next_norm, rope[0], rope[1], input_pos, mask)
            return self.logits(normed, normed=True)
        for layer in self.model.layers:
            x = layer(x, rope[0], rope[1], input_pos, mask, slot, start)
        return self.logits(x[:, -1:] if last_only else x)

    @torch.inference_mode()
    def prefill_rows(self, idx: torch.Tensor, input_pos: torch.Tensor, rows: torch.Tensor, last: torch.Tensor,
                     kv_len: int) -> torch.Tensor:
        """Prefill several slots in one forward: prompts of different lengths, each after its own cached prefix.

        idx: [B, T] tokens, row i going to cache row ``rows[i]`` at positions ``input_pos[i]`` ([B, T]; a
        shorter row is padded with any token at a scratch position above every real one that no slot uses,
        e.g. ``max_len - 1``: :func:`.generate.pad_rows`);
        last: [B] index in T of each row's last real token; kv_len: 1 + the highest real position.
        Every position must be below ``original_max_position`` (the short rotary factors; a longer prompt is
        prefilled alone).
        Returns the last real tokens' logits [B, V] (fp32). Each row attends to its own cache row's
        positions up to its own, exactly what :meth:`forward`'s prefill with ``start`` does one row at a time.
        """
        allowed = torch.arange(kv_len, device=idx.device) <= input_pos[..., None]  # [B, T, S]
        rope = self.step_rope[:, input_pos][:, :, None]  # [2, B, 1, T, R]
        x = self.model.embed_tokens(idx)
        for layer in self.model.layers:
            x = layer(x, rope[0], rope[1], input_pos, allowed[:, None], rows=rows)
        return self.logits(x[torch.arange(idx.shape[0], device=idx.device), last][:, None])[:, 0].float()
