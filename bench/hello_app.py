"""The reference ceiling for bench/serving.py: a bare Starlette "hello" on the same stack."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


async def hello(request: Request) -> Response:
    return Response(b'{"hello":"world"}', media_type="application/json")


app = Starlette(routes=[Route("/v1/users/{user_id:path}/signals", hello)])
