"""Reading and writing `ai_usage`: what each user's AI calls cost, by day and model."""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Date, Select, cast, func, select, tuple_
from sqlalchemy.orm import Session

from domain.ai.models import AiUsage
from domain.core.errors import InvalidInput
from domain.core.pagination import Page

DEFAULT_DAYS = 30
MAX_DAYS = 366


@dataclass(frozen=True)
class Period:
    """Whole UTC days, both ends included."""

    first: date
    last: date

    @classmethod
    def of(cls, first: date | None, last: date | None, *, today: date | None = None) -> Period:
        """The days asked for: by default the last 30 days up to today.

        Raises InvalidInput when `from` is after `to` or the range is longer than 366 days.
        """
        last = last or today or datetime.now(UTC).date()
        first = first or last - timedelta(days=DEFAULT_DAYS - 1)
        if first > last:
            raise InvalidInput("from must not be after to", details=[{"field": "from", "message": "after to"}])
        if (last - first).days >= MAX_DAYS:
            message = f"at most {MAX_DAYS} days at once"
            raise InvalidInput(f"the period is too long: {message}", details=[{"field": "from", "message": message}])
        return cls(first, last)

    @property
    def start(self) -> datetime:
        return datetime.combine(self.first, time.min, UTC)

    @property
    def end(self) -> datetime:
        return datetime.combine(self.last + timedelta(days=1), time.min, UTC)


@dataclass(frozen=True)
class UsageTotals:
    """Calls, tokens and cost of one group of calls (a day and model, or a user and model)."""

    key: tuple[Any, ...]
    calls: int
    failed_calls: int
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    reasoning_tokens: int
    cost_usd: Decimal


def usage_by_day(
    session: Session, user_id: uuid.UUID, period: Period, *, cursor: str | None, limit: int
) -> Page[UsageTotals]:
    """The user's calls per UTC day and model, newest day first (then by model).

    Raises InvalidInput for a cursor that is not a nextCursor of an earlier page.
    """
    day = cast(func.timezone("UTC", AiUsage.created_at), Date)
    query = _totals((day, AiUsage.model)).where(AiUsage.user_id == user_id)
    query = query.where(AiUsage.created_at >= period.start, AiUsage.created_at < period.end)
    if cursor:
        after_day, after_model = _decode(cursor)
        after = _date(after_day)
        query = query.where((day < after) | ((day == after) & (AiUsage.model > after_model)))
    query = query.group_by(day, AiUsage.model).order_by(day.desc(), AiUsage.model)
    return _page(session, query, limit)


def usage_by_user(
    session: Session, period: Period, *, user_id: uuid.UUID | None, cursor: str | None, limit: int
) -> Page[UsageTotals]:
    """Every user's calls per model over the period (erased users' calls under no user).

    Ordered by user id then model. Raises InvalidInput for a cursor that is not a
    nextCursor of an earlier page.
    """
    user_key = func.coalesce(AiUsage.user_id, uuid.UUID(int=0))
    query = _totals((user_key, AiUsage.model))
    query = query.where(AiUsage.created_at >= period.start, AiUsage.created_at < period.end)
    if user_id is not None:
        query = query.where(AiUsage.user_id == user_id)
    if cursor:
        after_user, after_model = _decode(cursor)
        query = query.where(tuple_(user_key, AiUsage.model) > tuple_(_uuid(after_user), after_model))
    query = query.group_by(user_key, AiUsage.model).order_by(user_key, AiUsage.model)
    return _page(session, query, limit)


def _totals(key: tuple[Any, ...]) -> Select[Any]:
    return select(
        *key,
        func.count(),
        func.count().filter(AiUsage.outcome != "ok"),
        func.sum(AiUsage.prompt_tokens),
        func.sum(AiUsage.completion_tokens),
        func.sum(AiUsage.cached_tokens),
        func.sum(AiUsage.reasoning_tokens),
        func.sum(AiUsage.cost_usd),
    )


def _page(session: Session, query: Select[Any], limit: int) -> Page[UsageTotals]:
    rows = session.execute(query.limit(limit + 1)).all()
    totals = [_totals_of(row) for row in rows]
    if len(totals) <= limit:
        return Page(totals, None)
    last = totals[limit - 1].key
    return Page(totals[:limit], _encode((str(last[0]), last[1])))


def _totals_of(row: Any) -> UsageTotals:
    return UsageTotals(
        key=(row[0], row[1]),
        calls=int(row[2]),
        failed_calls=int(row[3]),
        prompt_tokens=int(row[4]),
        completion_tokens=int(row[5]),
        cached_tokens=int(row[6]),
        reasoning_tokens=int(row[7]),
        cost_usd=Decimal(row[8]),
    )


def _encode(key: tuple[str, str]) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(key)).encode()).decode().rstrip("=")


def _decode(value: str) -> list[str]:
    """The (group, model) key of a nextCursor; raises InvalidInput for anything else."""
    try:
        key = json.loads(base64.urlsafe_b64decode((value + "=" * (-len(value) % 4)).encode()))
    except (binascii.Error, ValueError, UnicodeDecodeError) as exc:
        raise _bad_cursor() from exc
    if not (isinstance(key, list) and len(key) == 2 and all(isinstance(part, str) for part in key)):
        raise _bad_cursor()
    return key


def _date(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise _bad_cursor() from exc


def _uuid(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError as exc:
        raise _bad_cursor() from exc


def _bad_cursor() -> InvalidInput:
    return InvalidInput(
        "cursor is not valid", details=[{"field": "cursor", "message": "use nextCursor from a previous page"}]
    )
