"""Request and response bodies of the OpenAI API, with OpenAI's field names and limits.

Requests are checked here before anything runs, strictly: a field of the wrong JSON type is an
error (no "5" for 5), and so is a field this server does not know. That is OpenAI's own choice
("Unrecognized request argument supplied: foo", 400), not vLLM's (which ignores unknown fields):
a misspelt `max_token` that silently did nothing would be worse than an error. OpenAI fields
that change the answer and that this server does not implement (`logit_bias`, penalties,
`best_of`, `suffix`, tools, JSON mode) are accepted only at their neutral value, so a request
never gets an answer computed without an option it asked for. `user` is accepted and ignored.

Limits that depend on the server's flags (`n` <= --max-n, `max_tokens` <= --max-tokens-limit,
prompt + max_tokens <= the model's context) are checked by the app (serve/app.py).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

STRICT = ConfigDict(extra="forbid", strict=True)
# OpenAI fields accepted only at their neutral value: (field, neutral values)
NEUTRAL = {"presence_penalty": (0, 0.0), "frequency_penalty": (0, 0.0), "best_of": (1,),
           "logit_bias": ({},), "suffix": ("",), "tools": ([],), "tool_choice": ("none",),
           "functions": ([],), "function_call": ("none",), "parallel_tool_calls": (False, True),
           "response_format": ({"type": "text"},), "service_tier": ("auto", "default"),
           "store": (False,), "metadata": ({},), "modalities": (["text"],),
           "reasoning_effort": ()}


class StreamOptions(BaseModel):
    model_config = STRICT
    include_usage: bool | None = None


class _Request(BaseModel):
    model_config = STRICT
    model: str = Field(min_length=1, max_length=200)
    temperature: float | None = Field(1.0, ge=0, le=2)
    top_p: float | None = Field(1.0, gt=0, le=1)
    n: int | None = Field(1, ge=1)
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=-(2**63), le=2**64 - 1)
    user: str | None = None
    presence_penalty: Any = None
    frequency_penalty: Any = None
    logit_bias: Any = None

    @model_validator(mode="after")
    def _neutral(self):
        for name, default in (("temperature", 1.0), ("top_p", 1.0), ("n", 1), ("stream", False),
                              ("echo", False)):
            if name in type(self).model_fields and getattr(self, name) is None:
                setattr(self, name, default)
        if isinstance(self, CompletionRequest) and self.max_tokens is None:
            self.max_tokens = 16
        for name in type(self).model_fields:
            if name in NEUTRAL and getattr(self, name) is not None \
                    and getattr(self, name) not in NEUTRAL[name]:
                raise ValueError(f"NEUTRAL:{name}")
        if isinstance(self.stop, list) and len(self.stop) > 4:
            raise ValueError("STOP")
        return self

    @property
    def stops(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return tuple(s for s in ([self.stop] if isinstance(self.stop, str) else self.stop) if s)

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class CompletionRequest(_Request):
    prompt: str | list[str]
    max_tokens: int | None = Field(16, ge=0)
    logprobs: int | None = Field(None, ge=0, le=5)
    echo: bool | None = False
    best_of: Any = None
    suffix: Any = None

    @property
    def prompts(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)


class TextPart(BaseModel):
    model_config = STRICT
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = STRICT
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]
    name: str | None = None

    @property
    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text for p in self.content)


class ChatRequest(_Request):
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=0)
    max_completion_tokens: int | None = Field(None, ge=0)
    logprobs: bool | None = False
    top_logprobs: int | None = Field(None, ge=0, le=20)
    tools: Any = None
    tool_choice: Any = None
    functions: Any = None
    function_call: Any = None
    parallel_tool_calls: Any = None
    response_format: Any = None
    service_tier: Any = None
    store: Any = None
    metadata: Any = None
    modalities: Any = None
    reasoning_effort: Any = None

    @property
    def answer_tokens(self) -> int:
        if self.max_completion_tokens is not None:
            return self.max_completion_tokens
        return self.max_tokens if self.max_tokens is not None else 16


# -- answers --------------------------------------------------------------------------------

class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class CompletionLogprobs(BaseModel):
    tokens: list[str]
    token_logprobs: list[float | None]
    top_logprobs: list[dict[str, float] | None] | None
    text_offset: list[int]


class CompletionChoice(BaseModel):
    index: int
    text: str
    logprobs: CompletionLogprobs | None = None
    finish_reason: str | None = None


class Completion(BaseModel):
    id: str
    object: str = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None = None


class TokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob]


class ChatLogprobs(BaseModel):
    content: list[TokenLogprob] | None


class AssistantMessage(BaseModel):
    role: str = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    logprobs: ChatLogprobs | None = None
    finish_reason: str | None = None


class ChatCompletion(BaseModel):
    id: str
    object: str = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class ModelCard(BaseModel):
    id: str
    object: str = "model"
    created: int
    owned_by: str
    root: str
    parent: str | None = None
    # tailorlm's own: what kind of model answers (base, classification or generation adapter)
    kind: str
    method: str
    labels: list[str] | None = None


class ModelList(BaseModel):
    object: str = "list"
    data: list[ModelCard]
