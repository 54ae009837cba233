"""One JSON error shape for the whole API:

    {"error": {"status": 400, "code": "invalid", "message": "...", "fields": {"texts": ["..."]}}}

``fields`` appears for validation errors and maps each field to its messages.
"""

from __future__ import annotations

from typing import Any

from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from rest_framework import exceptions
from rest_framework.response import Response
from rest_framework.views import exception_handler


class BadRequest(exceptions.APIException):
    """A 400 whose ``code`` names the reason (``image_too_large``, ``empty_item``...) for clients to branch on."""

    status_code = 400
    default_code = "bad_request"
    default_detail = "bad request"


def error_body(status: int, code: str, message: str, fields: Any = None) -> dict[str, Any]:
    error: dict[str, Any] = {"status": status, "code": code, "message": message}
    if fields is not None:
        error["fields"] = fields
    return {"error": error}


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    response = exception_handler(exc, context)
    if response is None:
        return None  # unexpected errors: 500 through Django, logged with their traceback
    if isinstance(exc, exceptions.ValidationError):
        detail = exc.detail if isinstance(exc.detail, dict) else {"non_field_errors": exc.detail}
        response.data = error_body(response.status_code, "invalid", "the request has invalid fields", detail)
    elif isinstance(exc, exceptions.APIException):
        response.data = error_body(
            response.status_code,
            codes if isinstance(codes := exc.get_codes(), str) else "error",
            str(exc.detail),
        )
    elif isinstance(exc, Http404):
        response.data = error_body(404, "not_found", str(exc) or "not found")
    else:
        response.data = error_body(response.status_code, "error", str(exc))
    return response


def not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    if request.path.startswith("/api/"):
        return JsonResponse(error_body(404, "not_found", f"no endpoint or object at {request.path}"), status=404)
    return render(request, "404.html", status=404)


def server_error(request: HttpRequest) -> HttpResponse:
    if request.path.startswith("/api/"):
        return JsonResponse(error_body(500, "server_error", "internal error; it has been logged"), status=500)
    return render(request, "500.html", status=500)
