"""Request bodies (pydantic): the OpenAI and Ollama fields phikit honours, validated before any work.

Unknown fields are ignored, as vLLM does, so clients that send extra OpenAI options keep working; fields
phikit cannot honour (``n > 1``, ``logprobs``, non-zero penalties) get a 400 that says so.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    """OpenAI's error body (``/api/*`` routes answer Ollama's ``{"error": "..."}`` instead)."""

    error: ErrorDetail


ERROR_RESPONSES: dict[int | str, dict] = {
    400: {"model": ErrorResponse, "description": "Malformed JSON, a bad value, or a prompt over the context window"},
    401: {"model": ErrorResponse, "description": "Missing or wrong API key (when the server has one)"},
    404: {"model": ErrorResponse, "description": "Unknown model"},
    429: {"model": ErrorResponse, "description": "Queue full; retry after the Retry-After header's seconds"},
    504: {"model": ErrorResponse, "description": "The request ran past the server's timeout"},
}


class FunctionDef(_Body):
    name: str = Field(min_length=1, max_length=64)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ToolDef(_Body):
    type: Literal["function"] = "function"
    function: FunctionDef


class Message(BaseModel):
    """One chat turn. ``content`` is text or OpenAI text parts; tool turns carry ``tool_call_id``."""

    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None


class StreamOptions(_Body):
    include_usage: bool = False


class PhikitOptions(_Body):
    """phikit's extras, under ``"phikit"`` in the body.

    Attributes:
        kb: a knowledge base the server was started with (its name or path), ``true`` for the default one,
            ``false`` to answer without it.
        cot: reason in labelled steps; the response splits reasoning and answer.
        execute_tools: run the server's built-in tools named in ``tools`` and answer with their results.
        adapter: a LoRA adapter to apply.
        top_k, repetition_penalty: sampling options OpenAI's API lacks.
    """

    kb: bool | str | None = None
    cot: bool = False
    execute_tools: bool = False
    adapter: str | None = None
    top_k: int | None = Field(default=None, ge=0)
    repetition_penalty: float | None = Field(default=None, gt=0)


class SamplingFields(_Body):
    model: str | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    seed: int | None = None
    stop: str | list[str] | None = None
    n: int = Field(default=1, ge=1)
    logprobs: bool | None = None
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    user: str | None = None
    phikit: PhikitOptions = Field(default_factory=PhikitOptions)


class ChatCompletionRequest(SamplingFields):
    messages: list[Message]
    tools: list[ToolDef] | None = None
    tool_choice: Literal["none", "auto", "required"] | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    response_format: dict[str, Any] | None = None


class CompletionRequest(SamplingFields):
    prompt: str | list[str]
    echo: bool = False
    suffix: str | None = None


class EmbeddingRequest(_Body):
    model: str | None = None
    input: str | list[str]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1)
    user: str | None = None


# Ollama's API (docs/api.md of ollama/ollama).
class OllamaOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")
    temperature: float | None = Field(default=None, ge=0)
    top_p: float | None = Field(default=None, gt=0, le=1)
    top_k: int | None = Field(default=None, ge=0)
    num_predict: int | None = None  # -1 or -2: until the context is full
    seed: int | None = None
    stop: list[str] | str | None = None
    repeat_penalty: float | None = Field(default=None, gt=0)
    num_ctx: int | None = None


class OllamaChatRequest(_Body):
    model: str | None = None
    messages: list[Message] = Field(default_factory=list)
    stream: bool = True
    format: Literal["json", ""] | dict[str, Any] | None = None
    options: OllamaOptions | None = None
    tools: list[ToolDef] | None = None
    keep_alive: str | int | float | None = None
    think: bool | str | None = None
    phikit: PhikitOptions = Field(default_factory=PhikitOptions)  # the same extras as the OpenAI route


class OllamaGenerateRequest(_Body):
    model: str | None = None
    prompt: str = ""
    system: str | None = None
    stream: bool = True
    raw: bool = False
    format: Literal["json", ""] | dict[str, Any] | None = None
    options: OllamaOptions | None = None
    keep_alive: str | int | float | None = None
    think: bool | str | None = None
    phikit: PhikitOptions = Field(default_factory=PhikitOptions)


class OllamaEmbedRequest(_Body):
    model: str | None = None
    input: str | list[str]
    truncate: bool = True
