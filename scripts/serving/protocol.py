"""OpenAI-compatible request bodies (pydantic), validated field by field: unknown fields, bad types
and out-of-range values are refused with the field's name, as OpenAI's API refuses them."""

from typing import Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field, field_validator

MAX_STOP = 4  # OpenAI's limit on stop sequences


class ApiError(Exception):
  """An error the client caused (4xx) or one request's own failure (5xx), as an OpenAI error body."""

  def __init__(self, status: int, message: str, param: str | None = None, kind: str = "invalid_request_error",
               code: str | None = None):
    super().__init__(message)
    self.status, self.message, self.param, self.kind, self.code = status, message, param, kind, code

  def body(self) -> dict:
    return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


class _Strict(BaseModel):
  model_config = ConfigDict(extra="forbid")


class StreamOptions(_Strict):
  include_usage: bool = False


class _Sampling(_Strict):
  """Fields completions and chat completions share."""
  model: str
  temperature: float = Field(1.0, ge=0.0, le=2.0)
  top_p: float = Field(1.0, gt=0.0, le=1.0)
  top_k: int = Field(0, ge=-1)  # vLLM's extension; 0 or -1 = off
  stop: str | list[str] | None = None
  seed: int | None = None
  n: int = Field(1, ge=1)
  stream: bool = False
  stream_options: StreamOptions | None = None
  user: str | None = None
  return_token_ids: bool = False  # vLLM's extension: the generated token ids in each choice
  ignore_eos: bool = False  # vLLM's extension: generate max_tokens whatever the model says (benchmarks)
  # Accepted for compatibility with clients that always send them; only their neutral values.
  presence_penalty: float = 0.0
  frequency_penalty: float = 0.0

  @field_validator("stop")
  @classmethod
  def _at_most_four(cls, stop):
    stops = [stop] if isinstance(stop, str) else (stop or [])
    if len(stops) > MAX_STOP:
      raise ValueError(f"at most {MAX_STOP} stop sequences, got {len(stops)}")
    return stops

  @field_validator("presence_penalty", "frequency_penalty")
  @classmethod
  def _neutral(cls, value):
    if value != 0.0:
      raise ValueError("penalties are not supported; send 0 or leave the field out")
    return value

  @property
  def stops(self) -> list[str]:
    stops = [self.stop] if isinstance(self.stop, str) else (self.stop or [])
    return [s for s in stops if s]


class CompletionRequest(_Sampling):
  prompt: str | list[str] | list[int] | list[list[int]]
  max_tokens: int | None = Field(16, ge=0)
  logprobs: int | None = Field(None, ge=0, le=5)
  echo: bool = False


class Message(_Strict):
  role: Literal["system", "user", "assistant", "tool", "developer"]
  content: str
  name: str | None = None


class ChatRequest(_Sampling):
  messages: list[Message] = Field(min_length=1)
  max_tokens: int | None = Field(None, ge=1)
  max_completion_tokens: int | None = Field(None, ge=1)
  logprobs: bool = False
  top_logprobs: int | None = Field(None, ge=0, le=5)


class RatingFeedback(_Strict):
  id: str
  rating: Literal[1, -1]
  comment: str | None = None


class PairFeedback(_Strict):
  chosen: str
  rejected: str
  comment: str | None = None


class TokenizeRequest(_Strict):
  """vLLM's /tokenize, which lm-evaluation-harness's remote tokenizer calls."""
  model: str | None = None
  prompt: str
  add_special_tokens: bool = True


class DetokenizeRequest(_Strict):
  model: str | None = None
  tokens: list[int]


def validation_error(exc: pydantic.ValidationError | Exception, errors: list[dict]) -> ApiError:
  """The first problem, naming its field (`messages.0.role`), as a 400."""
  if not errors:
    return ApiError(400, str(exc))
  first = errors[0]
  loc = [str(x) for x in first.get("loc", ()) if x != "body"]
  if first.get("type") == "json_invalid":
    return ApiError(400, f"malformed JSON in the request body: {first.get('ctx', {}).get('error', first['msg'])}")
  if first.get("type") == "extra_forbidden":
    return ApiError(400, f"unknown field {'.'.join(loc)!r}", ".".join(loc))
  if first.get("type") in ("missing", "model_attributes_type", "dict_type") and not loc:
    return ApiError(400, "the request body must be a JSON object")
  param = ".".join(loc) or None
  return ApiError(400, f"{param}: {first['msg']}" if param else first["msg"], param)
