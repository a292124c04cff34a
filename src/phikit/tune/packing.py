"""Full-sequence packing and a chunked loss, so a QLoRA step does more real tokens for the same memory.

A LoRA step on short chats is bound by the CPU launching kernels (docs/lora.md: ~57 ms of GPU work under
~500 ms of launches for a 4-chat step on Phi-4-mini's shape), so the way to more tokens per second is more
tokens per step. :func:`group_by_tokens` fills each step with examples up to a token budget (best-fit
decreasing, the strategy of TRL's ``packing_strategy="bfd"``), and :func:`chunked_lm_loss` keeps the memory
of the longer rows down: the [tokens, vocab] logits (200,064 columns for Phi-4-mini, 0.8 GB in fp32 per
1,000 tokens) are computed a chunk at a time and recomputed in backward instead of being stored, the idea of
Liger-Kernel's fused linear cross-entropy and Unsloth's chunked loss, in plain PyTorch.
"""

from __future__ import annotations

from typing import Any

IGNORE = -100


def group_by_tokens(rows: list[dict], budget: int) -> list[dict]:
    """Group tokenized examples into steps of at most ``budget`` tokens (best-fit decreasing).

    Args:
        rows: ``{"input_ids": [...], "labels": [...]}`` per example.
        budget: tokens per step; an example longer than it gets a step of its own.

    Returns:
        ``[{"examples": [row, ...]}, ...]`` in a deterministic order (largest groups first); each becomes
        one padding-free row through :func:`phikit.tune.data.pack`.
    """
    groups: list[list[dict]] = []
    room: list[int] = []
    for row in sorted(rows, key=lambda r: len(r["input_ids"]), reverse=True):
        n = len(row["input_ids"])
        fits = [i for i, left in enumerate(room) if left >= n]
        if fits:
            best = min(fits, key=lambda i: room[i])
            groups[best].append(row)
            room[best] -= n
        else:
            groups.append([row])
            room.append(budget - n)
    return [{"examples": g} for g in groups]


def collate_groups(batch: list[dict[str, Any]]) -> dict:
    """Trainer collator for :func:`group_by_tokens` items: every example of the batch's groups in one row."""
    from .data import pack

    return pack([row for group in batch for row in group["examples"]])


def chunked_lm_loss(hidden, lm_head, labels, *, chunk: int | None = None, num_items: Any = None):
    """Next-token cross-entropy from the last hidden states, without materializing all logits.

    Logits are computed only where there is a target (``labels`` != -100: the assistant's tokens), so the output
    projection — a fifth of a 135M model's compute, with its 49k-token vocabulary — skips every prompt token.
    Each chunk's logits are computed in fp32 inside ``torch.utils.checkpoint``, so backward recomputes them chunk
    by chunk: peak memory holds one [chunk, vocab] block instead of [tokens, vocab]. Except on the CPU when the
    step fits one chunk (4 chats): there the recompute was 3% of a step, and memory is not what binds.

    Args:
        hidden: [batch, tokens, hidden] final hidden states (after the last norm).
        lm_head: the output projection (``nn.Linear``; LoRA-wrapped is fine).
        labels: [batch, tokens] target ids, ``-100`` where no loss is taken (unshifted, as transformers takes them).
        chunk: positions per chunk; default 256 on CUDA, 1,024 on the CPU. With Phi-4-mini's vocabulary a
            chunk's fp32 logits and their gradient set the QLoRA step's peak: 256 against 1,024 took it from
            6.0 to 4.25 GB (a memory profile, bench/qlora_memory.py; docs/lora.md).
        num_items: the number of target tokens to average over (the Trainer's ``num_items_in_batch`` under
            gradient accumulation); default: this batch's.

    Returns:
        The mean loss, a 0-dim float32 tensor; equal to transformers' ``ForCausalLMLoss`` on the full logits.
    """
    import torch
    import torch.nn.functional as F
    from torch.utils.checkpoint import checkpoint

    chunk = chunk or (256 if hidden.is_cuda else 1024)
    y = labels[:, 1:].reshape(-1).to(hidden.device)
    keep = (y != IGNORE).nonzero().squeeze(1)  # only positions with a target: a chat's answer, not its prompt
    h = hidden[:, :-1].reshape(-1, hidden.shape[-1]).index_select(0, keep)
    y = y[keep]

    def part(h_part, y_part):
        return F.cross_entropy(lm_head(h_part).float(), y_part, reduction="sum")

    if h.shape[0] <= chunk and not h.is_cuda:  # CPU, one chunk: no recompute
        total = part(h, y)
    else:
        total = hidden.new_zeros((), dtype=torch.float32)
        for start in range(0, h.shape[0], chunk):
            total = total + checkpoint(part, h[start:start + chunk], y[start:start + chunk], use_reentrant=False)
    count = num_items if num_items is not None else y.numel()
    return total / torch.as_tensor(count, device=total.device).clamp(min=1)


def trainer_class():
    """A transformers ``Trainer`` whose loss is :func:`chunked_lm_loss` on the base model's hidden states.

    Works on a peft-wrapped causal LM whose base exposes ``.model`` (the decoder) and ``.lm_head``
    (Llama, Phi-3 and most decoder-only architectures in transformers). ``use_cache=False`` matters: with a
    KV cache transformers does not read restarting position ids as packed sequences, and examples would
    attend to each other.
    """
    from transformers import Trainer

    class ChunkedLossTrainer(Trainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            causal = model.get_base_model() if hasattr(model, "get_base_model") else model
            labels = inputs["labels"]
            hidden = causal.model(input_ids=inputs["input_ids"], position_ids=inputs.get("position_ids"),
                                  attention_mask=inputs.get("attention_mask"), use_cache=False).last_hidden_state
            loss = chunked_lm_loss(hidden, causal.lm_head, labels, num_items=num_items_in_batch)
            return (loss, {"loss": loss}) if return_outputs else loss

    return ChunkedLossTrainer
