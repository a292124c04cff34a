"""Keep the base's everyday behaviour while an adapter learns facts: LoRA's A held off everyday text's inputs,
with LoRA+ to learn the facts in what is left (``phikit tune``'s CPU defaults: :func:`resolve_recipe`).

A LoRA adapter changes a module's output by ``(alpha / r) · B A x``. When every row of A is orthogonal to the
subspace that holds most of the energy of the module's inputs ``x`` on everyday text, that change is close to
zero on such text, so the base keeps its answers and its perplexity there, and the new facts are learned in the
directions everyday text leaves unused. :func:`input_bases` finds those subspaces once before training (the top
eigenvectors of each module's uncentred input covariance ``XᵀX``, as Gradient Projection Memory does: Saha et
al. 2021, "Gradient Projection Memory for Continual Learning"; O-LoRA keeps LoRA subspaces orthogonal the same
way: Wang et al. 2023), and :class:`Projector` projects A onto their complement at the start and after every
optimizer step.

Measured on ``examples/zorblax`` with the embedded model (docs/lora.md, sessions 10-11): at 95% of the energy,
alone, it held the general-text perplexity at 0.96× the base's but learned 53% of the facts where plain LoRA learned
90% (at 1.21×); with LoRA+ (:func:`loraplus_optimizer`, Hayou et al. 2024; the CPU default) 70-87% of the facts over
six runs (five seeds) at 0.97-1.09×, and 9 of 10 general questions kept on five of the six.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

# Everyday chats and prose (the embedded model's own answers and continuations, examples/zorblax/build.py);
# none of it is in phikit's retention set (tests/test_tune_preserve.py checks).
EVERYDAY = Path(str(resources.files("phikit") / "data" / "everyday.jsonl"))


def lora_modules(model) -> dict[str, object]:
    """The LoRA-wrapped modules of a peft model, by qualified name (those with a ``default`` adapter)."""
    return {n: m for n, m in model.named_modules() if hasattr(m, "lora_A") and "default" in m.lora_A}


def input_bases(model, batches, energy: float) -> dict[str, object]:
    """For each LoRA module, an orthonormal basis of the subspace holding ``energy`` of its inputs' energy.

    Args:
        model: a peft model; run with its adapter disabled, without gradients.
        batches: model inputs (``input_ids`` [1, tokens] and ``position_ids``), e.g. packed everyday chats.
        energy: share of the trace of ``XᵀX`` to keep clear of the adapter, in (0, 1).

    Returns:
        ``{module name: U}``, U of shape [in_features, k] (float32, the module's device): the top-k eigenvectors
        of ``XᵀX`` whose eigenvalues sum to at least ``energy`` of the trace. Modules reading one tensor (q, k
        and v; gate and up) get one shared U.
    """
    import torch

    mods = lora_modules(model)
    cov: dict[str, torch.Tensor] = {}
    last: dict[str, tuple[torch.Tensor, str]] = {}  # per parent module: the last input seen and who read it
    alias: dict[str, str] = {}  # q/k/v (gate/up) read one tensor: k and v share q's statistics

    def hook(name):
        parent = name.rsplit(".", 1)[0]

        def accumulate(_module, args):
            x = args[0]
            if parent in last and last[parent][0] is x:
                alias.setdefault(name, last[parent][1])
                return
            last[parent] = (x, name)
            x = x.detach().reshape(-1, x.shape[-1]).float()
            cov[name] = cov[name] + x.T @ x if name in cov else x.T @ x
        return accumulate

    hooks = [m.register_forward_pre_hook(hook(n)) for n, m in mods.items()]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), model.disable_adapter():
            for b in batches:
                model(input_ids=b["input_ids"].to(model.device), position_ids=b["position_ids"].to(model.device))
                last.clear()
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    bases: dict[str, torch.Tensor] = {}
    for name, c in cov.items():
        vals, vecs = torch.linalg.eigh(c)  # ascending
        vals, vecs = vals.flip(0).clamp(min=0), vecs.flip(1)
        k = int((vals.cumsum(0) / vals.sum() < energy).sum()) + 1
        bases[name] = vecs[:, :k].contiguous()
    for name, first in alias.items():
        bases[name] = bases[first]
    return bases


class Projector:
    """Projects each LoRA A onto the complement of its module's everyday input subspace: ``A ← A − (A U) Uᵀ``.

    Call :meth:`project` once after the adapter is made (A starts random) and after every optimizer step
    (:meth:`callback` does it for a transformers ``Trainer``). B is left free, so ``B A x`` is what vanishes.
    """

    def __init__(self, model, bases: dict[str, object]):
        mods = lora_modules(model)
        self.pairs = [(mods[n].lora_A["default"].weight, u) for n, u in bases.items()]

    def project(self) -> None:
        import torch

        with torch.no_grad():
            for a, u in self.pairs:  # a: [r, in_features], u: [in_features, k]
                a.sub_(((a.float() @ u) @ u.T).to(a.dtype))

    def callback(self):
        """A ``TrainerCallback`` that projects after each optimizer step."""
        from transformers import TrainerCallback

        projector = self

        class ProjectA(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                projector.project()

        return ProjectA()


def resolve_recipe(cfg, device: str) -> tuple[float, float]:
    """``(preserve, loraplus_ratio)`` for this run: the configured values, or the device's defaults.

    On the CPU (plain LoRA on the embedded model) the defaults are 0.95 and 4, the setting that kept the
    general-text perplexity at the base's while learning the facts (docs/lora.md, session 11). On CUDA
    (QLoRA on Phi-4-mini) both are off: the seeds' recipe, whose speed and memory docs/benchmarks.md measures;
    the projection's bases (a d × k matrix per module, k up to d: up to 12 GB for Phi-4-mini's 32 layers) would
    count against the GPU memory, and neither setting was measured on its real weights.
    """
    cpu = device == "cpu"
    preserve = cfg.preserve if cfg.preserve is not None else (0.95 if cpu else 0.0)
    ratio = cfg.loraplus_ratio if cfg.loraplus_ratio is not None else (4.0 if cpu else 1.0)
    return preserve, ratio


def projector_callback(model, energy: float, build):
    """Project ``model``'s LoRA A matrices off everyday text's input subspace now, and a ``TrainerCallback``
    that does it after every optimizer step (:class:`Projector`). ``build`` tokenizes examples as the
    training data is (chat template, system prompt)."""
    from . import data as data_mod

    everyday = build(data_mod.read_examples(EVERYDAY))
    batches = [data_mod.pack(everyday[i:i + 8]) for i in range(0, len(everyday), 8)]
    projector = Projector(model, input_bases(model, batches, energy))
    projector.project()
    return projector.callback()


def loraplus_optimizer(model, ratio: float, args):
    """AdamW with LoRA+'s parameter groups: B at ``ratio`` times the learning rate (peft's implementation)."""
    import torch
    from peft.optimizers import create_loraplus_optimizer

    return create_loraplus_optimizer(model, torch.optim.AdamW, lr=args.learning_rate, loraplus_lr_ratio=ratio,
                                     weight_decay=args.weight_decay, **({"fused": True} if args.optim == "adamw_torch_fused" else {}))
