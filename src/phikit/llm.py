"""The Python API: ``phikit.load`` -> :class:`LLM`; ``LLM.chat`` -> :class:`ChatResult` or an event stream."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from . import cot as cot_mod
from .engines import Done, Engine, Event, TextDelta, load_engine
from .errors import BadRequestError
from .models import resolve
from .pipeline import Request, run
from .prompt import normalize_messages
from .result import ChatResult, finish, sampling_params


class LLM:
    """A loaded model on one backend. Thread-compatible, not thread-safe: serialize calls per instance."""

    def __init__(self, engine: Engine, system_prompt: str | None = None):
        self.engine = engine
        self.system_prompt = system_prompt

    @property
    def model(self) -> str:
        return self.engine.model_name

    @property
    def backend(self) -> str:
        return self.engine.name

    def stream(self, messages: Any, *, cot: bool = False, tools: list[dict] | None = None,
               guided: dict | None = None, **params: Any) -> Iterator[Event]:
        """Stream :class:`TextDelta` events then one :class:`Done`. Closing the iterator stops generation.

        ``guided`` (remote engines only) carries ``tool_choice`` / ``response_format`` to the server, which
        constrains on its side (see :func:`phikit.tools.chat.remote_guidance`).

        Raises:
            BadRequestError: invalid messages or parameters (raised here, before any token).
        """
        msgs = normalize_messages(messages)
        if self.system_prompt and msgs[0]["role"] != "system":
            msgs = [{"role": "system", "content": self.system_prompt}, *msgs]
        if cot:
            msgs = cot_mod.with_cot_prompt(msgs)
        extra: dict[str, Any] = {"guided": guided} if guided else {}
        adapter = params.pop("adapter", None)  # a LoRA adapter (phikit.tune): name, directory or "none"
        supports = getattr(self.engine, "supports_adapters", False)
        if adapter == "none" and not supports:
            adapter = None  # the base model, which a backend without adapters always gives
        if adapter is not None:
            if not supports:
                raise BadRequestError(f"the {self.backend} backend applies no LoRA adapters; use --backend llamacpp "
                                      "(GGUF models) or transformers")
            extra["adapter"] = adapter
        return self.engine.generate(msgs, sampling_params(**params), tools=tools, **extra)

    def chat(
        self,
        messages: Any,
        *,
        stream: bool = False,
        cot: bool = False,
        tools: list | None = None,
        tool_choice: str | dict = "auto",
        response_format: dict | None = None,
        kb: Any = None,
        execute_tools: bool = False,
        audit_log: Any = None,
        confirm: Any = None,
        allow: Any = None,
        guards: Any = (),
        **params: Any,
    ):
        """Answer ``messages`` (OpenAI-shaped list, or a string for one user turn) through the request
        pipeline (:func:`phikit.pipeline.run`), the same path as the CLI and the server.

        Args:
            messages: the conversation.
            stream: return the event iterator instead of a finished result.
            cot: reason in labelled steps; ``reasoning`` and ``answer`` come back apart.
            tools: tool definitions (typed functions, OpenAI dicts, plain ``{name, parameters}`` dicts or
                names of built-ins). Calls come back unexecuted in ``extra["tool_calls"]`` (OpenAI semantics)
                unless ``execute_tools``.
            tool_choice: ``auto`` | ``none`` | ``required`` | ``{"type": "function", "function": {"name": ...}}``.
            response_format: ``{"type": "json_schema", "json_schema": {"schema": ...}}`` constrains the answer.
            kb: a knowledge base (directory or loaded index): answer only from it, with citations.
            execute_tools: run the calls (the agent loop) under the policy ``audit_log``, ``confirm``,
                ``allow``, ``guards`` (see :func:`phikit.agent.run_agent`).
            **params: :class:`SamplingParams` fields (max_new_tokens, temperature, top_p, top_k,
                repetition_penalty, seed, stop), ``adapter``, and with ``kb`` the RAG options (k, min_score...).

        Returns:
            :class:`ChatResult`, or with ``stream=True`` an iterator of events.

        Raises:
            BadRequestError: invalid messages or parameters, or options that cannot be combined (named).
        """
        req = Request(messages, tools=tools, tool_choice=tool_choice, execute_tools=execute_tools, kb=kb, cot=cot,
                      response_format=response_format, params=params, audit_log=audit_log, confirm=confirm,
                      allow=allow, guards=guards)
        events = run(self, req)
        return events if stream else finish(events, model=self.model, backend=self.backend, cot=cot)


def load(model: str | None = None, *, backend: str = "auto", **opts: Any) -> LLM:
    """Load a model: registry name, hub id, local directory or ``.gguf`` path (default: ``$PHIKIT_MODEL`` or
    the embedded SmolLM2-135M).

    Args:
        model: what to load.
        backend: ``auto`` | ``llamacpp`` | ``transformers`` | ``openai`` (a remote OpenAI-compatible server).
        **opts: backend options, e.g. ``precision="nf4"``, ``n_ctx=8192``, or for ``openai``
            ``base_url="http://host:8000/v1"`` and ``api_key``.

    Raises:
        ModelNotFoundError: the model is unknown or not on disk and the hub is unreachable.
        BadRequestError: a bad backend or option.
    """
    ref = model if backend == "openai" else resolve(model)  # a remote server names its own models
    return LLM(load_engine(ref, backend, **opts), system_prompt=getattr(ref, "system_prompt", None))


_loaded: dict[tuple, LLM] = {}


def ask(
    messages: Any,
    tools: list[dict] | None = None,
    max_new_tokens: int = 512,
    temperature: float = 0.3,
    stream: bool = False,
    *,
    model: str | None = None,
    backend: str = "auto",
    **params: Any,
):
    """One call, as the seeds' ``ask_phi(messages, tools=None, max_new_tokens=512, temperature=0.3,
    stream=False)``: loads the model once per process and answers.

    Returns:
        :class:`ChatResult` (``str(result)`` is the text), or the event iterator with ``stream=True``.
    """
    key = (model, backend)
    if key not in _loaded:
        _loaded[key] = load(model, backend=backend)
    return _loaded[key].chat(
        messages, stream=stream, tools=tools, max_new_tokens=max_new_tokens, temperature=temperature, **params
    )


__all__ = ["LLM", "ChatResult", "TextDelta", "Done", "ask", "load", "sampling_params"]
