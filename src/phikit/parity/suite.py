"""The parity suite: prompts, per-prompt comparison, precision tiers and their thresholds."""

from __future__ import annotations

import json
import platform
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path

from ..errors import BadRequestError

# Thresholds by the candidate's precision tier. Figures measured on the embedded model and the reasoning
# behind each bound: docs/export.md ("Thresholds"). `None` = reported, not enforced.
TIERS: dict[str, dict[str, float | None]] = {
    # same weights at >= 16 bits: only kernel order differs, so greedy text must match (the issue: 19 of 20)
    "exact": {"identical": 0.95, "top1": 0.98, "mean_kl": 0.01, "tool_calls": 0.95, "citations": 0.95},
    # 8-bit blocks (Q8_0, int8): small, real drift; greedy text may part after many tokens
    "8bit": {"identical": None, "top1": 0.90, "mean_kl": 0.05, "tool_calls": None, "citations": None},
    # 4-bit (int4 MatMulNBits, Q4_K_M, Q4_1): a 135M model moves visibly; bounds catch a broken runtime
    # (the Q4_1-on-AVX2 nonsense) rather than ordinary 4-bit loss
    "4bit": {"identical": None, "top1": 0.70, "mean_kl": 0.50, "tool_calls": None, "citations": None},
}
# What each precision name (a manifest's "type", a GGUF file type) counts as.
TIER_OF_TYPE = {
    **dict.fromkeys(("fp32", "f32", "f16", "fp16", "bf16"), "exact"),
    **dict.fromkeys(("q8_0", "int8"), "8bit"),
    **dict.fromkeys(("int4", "q4_0", "q4_1", "q4_k_m", "q4_k_s", "q5_0", "q5_1", "q5_k_m", "q6_k"), "4bit"),
}
GGUF_FILE_TYPES = {0: "f32", 1: "f16", 2: "q4_0", 3: "q4_1", 7: "q8_0", 8: "q5_0", 9: "q5_1", 14: "q4_k_s",
                   15: "q4_k_m", 17: "q5_k_m", 18: "q6_k", 32: "bf16"}


@dataclass
class PromptResult:
    """One prompt's comparison. Token lists are the greedy continuations (end-of-sequence excluded)."""

    id: str
    kind: str
    reference_text: str
    candidate_text: str
    reference_tokens: list[int]
    candidate_tokens: list[int]
    identical: bool
    first_divergence: int | None  # index of the first differing token; None when identical
    prompt_tokens_equal: bool  # both backends tokenized the rendered prompt the same way
    top1: float  # teacher-forced top-1 agreement on the reference's path, 0..1
    mean_kl: float  # nats
    max_kl: float  # nats
    tool_calls_same: bool | None = None  # tool prompts only
    citations_same: bool | None = None  # RAG prompts only


@dataclass
class ParityReport:
    """A whole run: what was compared, the summary, pass/fail against the tier, and every prompt."""

    reference: str
    candidate: str
    tier: str
    tokens: int
    thresholds: dict
    summary: dict
    passed: bool
    failures: list[str]
    prompts: list[PromptResult] = field(default_factory=list)
    environment: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def load_prompts(path: str | Path | None = None, limit: int | None = None) -> list[dict]:
    """The parity prompts: ``path`` (JSON lines of ``{"id", "kind", "messages", "tools"?}``) or the packaged set.

    Raises:
        BadRequestError: the file is missing, not JSON lines, or a row lacks ``messages``.
    """
    try:
        if path is None:
            text = resources.files("phikit").joinpath("data/parity_prompts.jsonl").read_text()
        else:
            text = Path(path).read_text()
        rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    except OSError as exc:
        raise BadRequestError(f"could not read the prompts file {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise BadRequestError(f"the prompts file {path} is not JSON lines: {exc}") from None
    for i, row in enumerate(rows, 1):
        if not isinstance(row, dict) or not isinstance(row.get("messages"), list):
            raise BadRequestError(f"prompt {i} of {path} needs a 'messages' list")
        row.setdefault("id", f"prompt-{i}")
        row.setdefault("kind", "tool" if row.get("tools") else "chat")
    if not rows:
        raise BadRequestError(f"the prompts file {path} holds no prompts")
    return rows[:limit] if limit else rows


def tier_of(engine) -> str | None:
    """The precision tier of a loaded engine's weights, or None when it cannot be told.

    GGUF: its ``general.file_type``; ONNX: the ``type`` in its phikit manifest; transformers: ``exact``
    (it runs the checkpoint's own weights).
    """
    if engine.name == "transformers":
        return "exact"
    if engine.name == "llamacpp":
        from ..engines.llamacpp import gguf_header

        path = engine.llm.model_path
        ftype = gguf_header(path, {"general.file_type"}).get("general.file_type")
        return TIER_OF_TYPE.get(GGUF_FILE_TYPES.get(ftype, ""))
    if engine.name == "onnx":
        from ..export.manifest import read_manifest

        return TIER_OF_TYPE.get((read_manifest(engine.path) or {}).get("type", ""))
    return None


def _greedy(engine, row: dict, tokens: int):
    from ..engines import Done, SamplingParams

    params = SamplingParams(max_new_tokens=tokens, temperature=0)
    done = None
    for ev in engine.generate(row["messages"], params, tools=row.get("tools")):
        if isinstance(ev, Done):
            done = ev
    return done


def _calls(text: str, tools) -> list:
    from ..tools.parse import parse_tool_calls

    out = []
    for c in parse_tool_calls(text, tools):
        fn = c["function"]
        try:
            args = json.loads(fn.get("arguments") or "{}")
        except ValueError:
            args = fn.get("arguments")
        out.append((fn["name"], json.dumps(args, sort_keys=True)))
    return out


def _citations(text: str) -> list[str]:
    from ..rag.verify import CITE

    return sorted({n.strip() for m in CITE.finditer(text) for n in m.group(1).replace(";", ",").split(",")})


def compare_prompt(reference, candidate, row: dict, tokens: int) -> PromptResult:
    """Run ``row`` greedily on both engines, then teacher-force the reference's tokens through both."""
    from .logits import kl_divergence, teacher_forced

    ref, cand = _greedy(reference, row, tokens), _greedy(candidate, row, tokens)
    r_ids, c_ids = list(ref.token_ids), list(cand.token_ids)
    div = next((i for i, (a, b) in enumerate(zip(r_ids, c_ids)) if a != b), None)
    if div is None and len(r_ids) != len(c_ids):
        div = min(len(r_ids), len(c_ids))
    r_prompt = reference.encode_prompt(row["messages"], row.get("tools"))
    c_prompt = candidate.encode_prompt(row["messages"], row.get("tools"))
    forced = r_ids + [0]  # the last forced token is never fed: the extra row is the reference's end position
    lr, lc = teacher_forced(reference, r_prompt, forced), teacher_forced(candidate, c_prompt, forced)
    v = min(lr.shape[-1], lc.shape[-1])
    top1 = float((lr[:, :v].argmax(-1) == lc[:, :v].argmax(-1)).mean())
    kl = kl_divergence(lr, lc)
    result = PromptResult(
        id=row["id"], kind=row["kind"], reference_text=ref.text, candidate_text=cand.text,
        reference_tokens=r_ids, candidate_tokens=c_ids, identical=div is None, first_divergence=div,
        prompt_tokens_equal=r_prompt == c_prompt, top1=top1, mean_kl=float(kl.mean()), max_kl=float(kl.max()),
    )
    if row.get("tools"):
        result.tool_calls_same = _calls(ref.text, row["tools"]) == _calls(cand.text, row["tools"])
    if row["kind"] == "rag":
        result.citations_same = _citations(ref.text) == _citations(cand.text)
    return result


def summarize(results: list[PromptResult]) -> dict:
    """Overall figures: rates over prompts, top-1 and KL over every teacher-forced position's prompt means."""
    n = len(results)
    tools = [r.tool_calls_same for r in results if r.tool_calls_same is not None]
    cites = [r.citations_same for r in results if r.citations_same is not None]
    divs = [r.first_divergence for r in results if r.first_divergence is not None]
    return {
        "prompts": n,
        "identical": sum(r.identical for r in results),
        "identical_rate": sum(r.identical for r in results) / n,
        "first_divergence_median": sorted(divs)[len(divs) // 2] if divs else None,
        "prompt_tokens_equal": sum(r.prompt_tokens_equal for r in results),
        "top1": sum(r.top1 for r in results) / n,
        "mean_kl": sum(r.mean_kl for r in results) / n,
        "max_kl": max(r.max_kl for r in results),
        "tool_calls_same": f"{sum(tools)}/{len(tools)}" if tools else None,
        "tool_calls_rate": sum(tools) / len(tools) if tools else None,
        "citations_same": f"{sum(cites)}/{len(cites)}" if cites else None,
        "citations_rate": sum(cites) / len(cites) if cites else None,
    }


def check(summary: dict, thresholds: dict) -> list[str]:
    """The thresholds ``summary`` misses, one line each (empty: passed)."""
    failures = []
    checks = [("identical", "identical_rate", ">="), ("top1", "top1", ">="), ("mean_kl", "mean_kl", "<="),
              ("tool_calls", "tool_calls_rate", ">="), ("citations", "citations_rate", ">=")]
    for key, measured, op in checks:
        bound, value = thresholds.get(key), summary.get(measured)
        if bound is None or value is None:
            continue
        if (op == ">=" and value < bound) or (op == "<=" and value > bound):
            failures.append(f"{measured} {value:.4g} is not {op} {bound}")
    return failures


def parse_spec(spec: str) -> tuple[str, str]:
    """``"BACKEND:PATH"`` -> (backend, model).

    Raises:
        BadRequestError: no ``:`` or an unknown backend.
    """
    from ..engines import BACKENDS

    backend, sep, model = spec.partition(":")
    if not sep or not model or backend not in BACKENDS or backend in ("auto", "openai", "fast"):
        raise BadRequestError(
            f"{spec!r} is not BACKEND:MODEL with BACKEND one of llamacpp, transformers, onnx "
            "(e.g. transformers:smollm2-135m or onnx:out/smollm2-onnx)"
        )
    return backend, model


def load_side(spec: str):
    """Load one side of a comparison (``BACKEND:MODEL``) as an engine."""
    from ..engines import load_engine
    from ..models import resolve

    backend, model = parse_spec(spec)
    return load_engine(resolve(model), backend)


def run_parity(reference: str, candidate: str, *, prompts: str | Path | None = None, tokens: int = 32,
               limit: int | None = None, tier: str = "auto", engines: tuple | None = None,
               progress: bool = True) -> ParityReport:
    """Compare ``candidate`` with ``reference`` on the prompt set and hold it to its tier's thresholds.

    Args:
        reference, candidate: ``BACKEND:MODEL`` (``transformers:smollm2-135m``, ``onnx:DIR``, ``llamacpp:F.gguf``).
        prompts: a JSON-lines prompts file; None uses the packaged 20.
        tokens: greedy tokens per prompt (and teacher-forced positions).
        limit: use only the first ``limit`` prompts.
        tier: ``exact`` | ``8bit`` | ``4bit``, or ``auto`` to read it from the candidate's weights.
        engines: already-loaded (reference, candidate) engines; skips loading (tests, export).
        progress: a progress bar over prompts on stderr (a terminal only).

    Raises:
        BadRequestError: a bad spec, prompts file or tier, or a tier that cannot be told (pass ``tier``).
    """
    from tqdm.auto import tqdm

    if tokens < 1:
        raise BadRequestError("--tokens must be at least 1")
    if tier not in ("auto", *TIERS):
        raise BadRequestError(f"unknown tier {tier!r}; use auto, {', '.join(TIERS)}")
    rows = load_prompts(prompts, limit)
    ref, cand = engines or (load_side(reference), load_side(candidate))
    if tier == "auto":
        tier = tier_of(cand) or ""
        if not tier:
            raise BadRequestError(f"cannot tell the precision of {candidate}; pass --tier {'|'.join(TIERS)}")
    results = [compare_prompt(ref, cand, row, tokens)
               for row in tqdm(rows, desc="parity", unit="prompt", disable=None if progress else True, leave=False)]
    summary = summarize(results)
    failures = check(summary, TIERS[tier])
    return ParityReport(reference=reference, candidate=candidate, tier=tier, tokens=tokens,
                        thresholds=TIERS[tier], summary=summary, passed=not failures, failures=failures,
                        prompts=results, environment=environment())


def environment() -> dict:
    """Device and library versions behind a report."""
    from ..export.manifest import tool_versions

    return {"python": platform.python_version(), "machine": f"{platform.machine()} {platform.processor()}".strip(),
            **tool_versions()}
