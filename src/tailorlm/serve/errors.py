"""Every error the server answers, in OpenAI's envelope, with the status OpenAI's clients expect.

    {"error": {"message": "...", "type": "invalid_request_error", "param": "max_tokens",
               "code": "invalid_value"}}

    400 invalid_request_error   unreadable JSON, a body that is not an object, a wrong type or
                                value, an unknown field, an empty prompt, over the context
    401 invalid_request_error   no key or a wrong key (code invalid_api_key), as OpenAI answers
    404 invalid_request_error   an unknown model (code model_not_found) or route
    413 invalid_request_error   a body over --max-body-mb (code request_too_large)
    422 invalid_request_error   a valid request the named model cannot serve (code
                                unsupported_for_model): echo to a classification adapter, chat
                                to an adapter without a user message
    429 rate_limit_error        the queue is full (--max-queue); Retry-After says when to retry
    503 server_error            the request ran past --request-timeout-s; Retry-After too

The official `openai` client maps these statuses to its exception classes (BadRequestError,
AuthenticationError, NotFoundError, UnprocessableEntityError, RateLimitError, ...). Bad input
never reaches a 500: request bodies are checked before anything runs (serve/schemas.py), and the
engine's own refusals (ValueError: a prompt over the context) become 400.
"""

from __future__ import annotations

from fastapi.responses import JSONResponse

TYPES = {400: "invalid_request_error", 401: "invalid_request_error",
         404: "invalid_request_error", 405: "invalid_request_error",
         413: "invalid_request_error", 422: "invalid_request_error", 429: "rate_limit_error",
         500: "server_error", 503: "server_error"}


class APIError(Exception):
    """An answer other than 200, raised anywhere in a request and turned into the envelope."""

    def __init__(self, status: int, message: str, *, param: str | None = None,
                 code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.headers = headers or {}

    def body(self) -> dict:
        return envelope(self.status, self.message, self.param, self.code)

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def envelope(status: int, message: str, param: str | None = None,
             code: str | None = None) -> dict:
    return {"error": {"message": message, "type": TYPES.get(status, "invalid_request_error"),
                      "param": param, "code": code}}


def bad_request(message: str, param: str | None = None, code: str = "invalid_value") -> APIError:
    return APIError(400, message, param=param, code=code)


def model_not_found(model: str) -> APIError:
    return APIError(404, f"The model {model!r} does not exist or you do not have access to it; "
                    f"GET /v1/models lists what this server serves", param="model",
                    code="model_not_found")


def queue_full(retry_after_s: int) -> APIError:
    return APIError(429, "The server is busy (its queue is full); retry after "
                    f"{retry_after_s} s", code="rate_limit_exceeded",
                    headers={"Retry-After": str(retry_after_s)})


def timed_out(seconds: float) -> APIError:
    return APIError(503, f"The request did not finish within {seconds:g} s; retry later or ask "
                    "for fewer tokens", code="timeout", headers={"Retry-After": "1"})
