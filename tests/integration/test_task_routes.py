"""The domain's task routes, Celery's registry and celeryconfig agree."""

from __future__ import annotations

import pytest

from celeryconfig import QUEUES, celery_settings
from domain.operations import routes
from domain.operations.routes import TaskRoute
from tasks.app import app

ROUTES = [value for value in vars(routes).values() if isinstance(value, TaskRoute)]


@pytest.fixture(scope="module")
def registered() -> set[str]:
    app.loader.import_default_modules()
    return set(app.tasks)


@pytest.mark.parametrize("route", ROUTES, ids=lambda route: route.name)
def test_every_route_names_a_registered_task_routed_to_its_queue(route: TaskRoute, registered: set[str]) -> None:
    assert route.name in registered
    assert route.queue in QUEUES
    assert app.amqp.router.route({}, route.name)["queue"].name == route.queue


def test_every_project_task_goes_to_exactly_one_known_queue(registered: set[str]) -> None:
    ours = [name for name in registered if name.startswith(("tasks.", "beat."))]
    assert len(ours) >= len(ROUTES) + 4
    for name in ours:
        assert app.amqp.router.route({}, name)["queue"].name in QUEUES


def test_the_reliability_settings_hold(settings, registered: set[str]) -> None:
    config = celery_settings(settings)
    assert config["task_acks_late"] and config["task_reject_on_worker_lost"]
    assert config["worker_prefetch_multiplier"] == 1
    assert config["task_ignore_result"] and config["result_backend"] is None
    assert config["task_time_limit"] < config["broker_transport_options"]["visibility_timeout"]
    assert config["task_soft_time_limit"] < config["task_time_limit"]
    scheduled = {entry["task"] for entry in config["beat_schedule"].values()}
    assert len(scheduled) == 8 and scheduled <= registered
    # The safety net for lost audit wake-ups runs where the wake-ups go.
    assert "tasks.audit.drain" in scheduled
    assert app.amqp.router.route({}, "tasks.audit.drain")["queue"].name == "audit"
