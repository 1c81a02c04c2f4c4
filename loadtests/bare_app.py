"""A bare Falcon hello-world: the baseline `loadtests.bench` compares the ingress with.

It is served exactly like the ingress (same gunicorn configuration file, so the same gevent
worker class, worker count and keep-alive) and does only what any Falcon app must: route,
parse a small JSON body, serialise a small JSON answer. No middleware, database or Redis.

`GET /hello` answers `{"status": "ok"}` and `POST /hello` a 202 (the baseline of body-less
POSTs); `POST /echo` reads a JSON object and answers with it, so a client chaining
`refreshToken` values sees the same shape as from the ingress.
"""

from __future__ import annotations

from typing import Any

import falcon

HELLO_PATH = "/hello"
ECHO_PATH = "/echo"


class Hello:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = {"status": "ok"}

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.status = falcon.HTTP_202
        resp.media = {"status": "accepted"}


class Echo:
    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        data: Any = req.get_media()
        if not isinstance(data, dict):
            raise falcon.HTTPBadRequest(title="request body must be a JSON object")
        resp.media = data


def create_app() -> falcon.App[falcon.Request, falcon.Response]:
    app = falcon.App()
    app.add_route(HELLO_PATH, Hello())
    app.add_route(ECHO_PATH, Echo())
    return app


app = create_app()
