"""Errors in OpenAI's shape, on every route: ``{"error": {"message", "type", "param", "code"}}``.

The official clients read that shape, and retry 408/409/429/5xx honouring ``Retry-After``; so overload
is a 429 with ``Retry-After`` and draining a 503 with it, never a silent wait.
"""

from __future__ import annotations

from typing import Any


class APIError(Exception):
    """A request that fails with ``status``; ``param`` names the field (and index) at fault."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.retry_after = retry_after

    def body(self) -> dict[str, Any]:
        """The JSON body."""
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def headers(self) -> dict[str, str]:
        """``Retry-After`` (whole seconds) where the client should come back later."""
        if self.retry_after is None:
            return {}
        return {"Retry-After": str(max(1, int(self.retry_after + 0.999))), "x-should-retry": "true"}


def bad_request(message: str, param: str | None = None, code: str = "invalid_value") -> APIError:
    """400: the request is malformed or a value is wrong."""
    return APIError(400, message, param=param, code=code)


def overloaded(retry_after: float, model: str) -> APIError:
    """429: the model's queue is full; come back after ``retry_after`` seconds."""
    return APIError(429, f"model {model!r} is overloaded: its queue is full; retry after {retry_after:.0f} s",
                    type="rate_limit_error", code="overloaded", retry_after=retry_after)
