"""Every error as JSON with a one-line `message`: a 422's `detail` is always the list of field errors
(schemas.ValidationErrorOut), any other error's `detail` repeats the message (schemas.ErrorOut).
`responses(...)` documents them in the OpenAPI document."""

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
from backend.schemas import ErrorOut, ValidationErrorOut
from sim.errors import InputError

log = logging.getLogger("backend.api")

DESCRIPTIONS = {
    400: "Bad request: an unsafe artifact name, or a malformed Content-Length.",
    401: "Missing or wrong bearer token (only when the studio runs with VLARFT_API_TOKEN).",
    404: "No such run, dataset, episode or artifact.",
    409: "Conflict: the run or dataset is busy, in the wrong state, or the name is taken.",
    413: "The request body is larger than VLARFT_MAX_UPLOAD_BYTES.",
    422: "Invalid input: each problem names its field.",
    503: "The broker is unreachable; nothing was queued.",
}


def responses(*codes: int) -> dict[int | str, dict]:
    """OpenAPI entries for the error answers a route can give, with the body each really has."""
    return {code: {"model": ValidationErrorOut if code == 422 else ErrorOut, "description": DESCRIPTIONS[code]}
            for code in codes}


def _clean(errors: list[dict]) -> list[dict]:
    """JSON-safe copies: drop the raw input and exception objects pydantic keeps."""
    return [{"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")).removeprefix("Value error, "),
             "type": str(e.get("type", "value_error"))} for e in errors]


def invalid(errors: list[dict]) -> RequestValidationError:
    return RequestValidationError(errors)


def unprocessable(msg: str, loc: tuple[str | int, ...] = ()) -> JSONResponse:
    """A 422 for one problem; `msg` may already start with its field ('file: ...')."""
    return JSONResponse({"message": msg, "detail": [{"loc": list(loc), "msg": msg, "type": "value_error"}]},
                        status_code=422)


def error(status: int, msg: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"message": msg, "detail": msg}, status_code=status, headers=headers)


class CatchAll:
    """Answer an unexpected exception with a JSON 500 and return, instead of re-raising it: Starlette's
    outermost handler re-raises after answering, and uvicorn then drops the keep-alive connection."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watch(message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except HTTPException:
            raise  # answered further out (a body over its limit is a 413)
        except Exception as exc:
            if started:
                raise
            log.exception("internal error on %s %s", scope.get("method"), scope.get("path"))
            await error(500, f"internal error ({type(exc).__name__})")(scope, receive, send)


def install(app: FastAPI) -> None:
    app.add_middleware(CatchAll)

    @app.exception_handler(RequestValidationError)
    async def _validation(_req: Request, exc: RequestValidationError) -> JSONResponse:
        errors = list(exc.errors())
        return JSONResponse({"message": validation_message(errors), "detail": _clean(errors)}, status_code=422)

    @app.exception_handler(HTTPException)
    async def _http(_req: Request, exc: HTTPException) -> JSONResponse:
        msg = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if exc.status_code == 422:
            return unprocessable(msg)
        return error(exc.status_code, msg, exc.headers)

    @app.exception_handler(Conflict)
    async def _conflict(_req: Request, exc: Conflict) -> JSONResponse:
        return error(409, str(exc))

    @app.exception_handler(BrokerUnavailable)
    async def _broker(_req: Request, exc: BrokerUnavailable) -> JSONResponse:
        return error(503, str(exc))

    @app.exception_handler(UnsafePathError)
    async def _path(_req: Request, exc: UnsafePathError) -> JSONResponse:
        return error(400, str(exc))

    @app.exception_handler(InputError)
    async def _input(_req: Request, exc: InputError) -> JSONResponse:
        return unprocessable(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)

    @app.exception_handler(Exception)
    async def _internal(req: Request, exc: Exception) -> JSONResponse:
        log.exception("internal error on %s %s", req.method, req.url.path)
        return error(500, f"internal error ({type(exc).__name__})")
