"""Domain errors to HTTP responses, in one table.

Every error body has one shape: ``{"error": {"code": "...", "message": "..."}}``.
Routes never raise HTTP exceptions themselves; services raise domain errors
and this table decides the status code.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from control_plane import errors
from fleetcore.errors import EdgefleetError, RuntimeLoadError

STATUS: dict[type[Exception], int] = {
    errors.NotFoundError: 404,
    errors.ConflictError: 409,
    errors.StateError: 409,
    errors.InvalidInputError: 422,
    errors.PayloadTooLargeError: 413,
    errors.AuthenticationError: 401,
    errors.PermissionDeniedError: 403,
    errors.SigningError: 422,
    errors.ConfigurationError: 500,
    RuntimeLoadError: 422,
    EdgefleetError: 422,
}


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorBody(BaseModel):
    error: ErrorDetail


#: For the OpenAPI description of routes.
ERROR_RESPONSES: dict[int | str, dict[str, object]] = {
    status: {"model": ErrorBody} for status in (401, 403, 404, 409, 413, 422)
}


def _status(exc: Exception) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 500


def error_response(status: int, code: str, message: str) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    body = ErrorBody(error=ErrorDetail(code=code, message=message))
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


async def _domain(_: Request, exc: Exception) -> JSONResponse:
    if isinstance(exc, errors.ControlPlaneError):
        return error_response(_status(exc), exc.code, exc.message)
    assert isinstance(exc, EdgefleetError)
    return error_response(_status(exc), exc.check, str(exc))


async def _request_validation(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
    where = ".".join(str(p) for p in first.get("loc", ()))
    return error_response(422, "invalid_request", f"{where}: {first.get('msg', 'invalid')}")


def install(app: FastAPI) -> None:
    app.add_exception_handler(errors.ControlPlaneError, _domain)
    app.add_exception_handler(EdgefleetError, _domain)
    app.add_exception_handler(RequestValidationError, _request_validation)


__all__ = ["ERROR_RESPONSES", "STATUS", "ErrorBody", "error_response", "install"]
