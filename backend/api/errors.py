"""Every error as JSON with a one-line `message`; schema errors keep pydantic's list in `detail`."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from backend.celery_app import BrokerUnavailable
from backend.crud import Conflict
from backend.files import UnsafePathError
from backend.params import describe_errors as validation_message
from sim.errors import InputError

log = logging.getLogger("backend.api")


def _clean(errors: list[dict]) -> list[dict]:
    """JSON-safe copies: drop the raw input and exception objects pydantic keeps."""
    return [{"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")).removeprefix("Value error, "),
             "type": str(e.get("type", "value_error"))} for e in errors]


def invalid(errors: list[dict]) -> RequestValidationError:
    return RequestValidationError(errors)


def install(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _validation(_req: Request, exc: RequestValidationError) -> JSONResponse:
        errors = list(exc.errors())
        return JSONResponse({"message": validation_message(errors), "detail": _clean(errors)}, status_code=422)

    @app.exception_handler(HTTPException)
    async def _http(_req: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"message": str(exc.detail), "detail": exc.detail}, status_code=exc.status_code,
                            headers=exc.headers)

    @app.exception_handler(Conflict)
    async def _conflict(_req: Request, exc: Conflict) -> JSONResponse:
        return JSONResponse({"message": str(exc), "detail": str(exc)}, status_code=409)

    @app.exception_handler(BrokerUnavailable)
    async def _broker(_req: Request, exc: BrokerUnavailable) -> JSONResponse:
        return JSONResponse({"message": str(exc), "detail": str(exc)}, status_code=503)

    @app.exception_handler(UnsafePathError)
    async def _path(_req: Request, exc: UnsafePathError) -> JSONResponse:
        return JSONResponse({"message": str(exc), "detail": str(exc)}, status_code=400)

    @app.exception_handler(InputError)
    async def _input(_req: Request, exc: InputError) -> JSONResponse:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return JSONResponse({"message": msg, "detail": msg}, status_code=422)

    @app.exception_handler(Exception)
    async def _internal(req: Request, exc: Exception) -> JSONResponse:
        log.exception("internal error on %s %s", req.method, req.url.path)
        return JSONResponse({"message": f"internal error ({type(exc).__name__})", "detail": "internal error"},
                            status_code=500)
