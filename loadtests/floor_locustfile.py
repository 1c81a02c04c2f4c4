"""Locust users for `loadtests.floor`: each sends one GET, FLOOR_PATH, then thinks 1-3 s, over and over.

The same user as `make load`'s (FastHttpUser, `between(1, 3)`, an `X-Forwarded-For` of its own).
Against the ingress (FLOOR_PATH under /api/) a user first registers (request `register`) and
then sends its bearer token; against the bare app (`/hello`) it only sends the GET.
"""

from __future__ import annotations

import itertools
import os
import uuid

from locust import FastHttpUser, between, task

from loadtests.locustfile import PASSWORD, client_address

PATH = os.environ.get("FLOOR_PATH", "/hello")
RUN_ID = os.environ.get("LOAD_RUN_ID") or uuid.uuid4().hex[:8]

_numbers = itertools.count(1)


class Visitor(FastHttpUser):
    wait_time = between(1, 3)

    def on_start(self) -> None:
        number = next(_numbers)
        self.headers = {"X-Forwarded-For": client_address(number)}
        if PATH.startswith("/api/"):
            body = {
                "email": f"floor-{RUN_ID}-{number}@users.example",
                "password": PASSWORD,
                "role": "job_seeker",
                "name": "Floor visitor",
            }
            resp = self.client.post("/api/v1/auth/register", json=body, headers=self.headers, name="register")
            if resp.status_code == 201:
                self.headers["Authorization"] = f"Bearer {resp.json()['accessToken']}"

    @task
    def visit(self) -> None:
        self.client.get(PATH, headers=self.headers)
