"""Opaque keyset cursors: (created_at, id) of the last item of a page."""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar, cast

from sqlalchemy import Select, tuple_
from sqlalchemy.orm import InstrumentedAttribute, Session

from domain.core.errors import InvalidInput

T = TypeVar("T")

DEFAULT_LIMIT = 20
MAX_LIMIT = 100


@dataclass(frozen=True)
class Cursor:
    created_at: datetime
    id: uuid.UUID


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    next_cursor: str | None


def encode_cursor(created_at: datetime, item_id: uuid.UUID) -> str:
    raw = json.dumps([created_at.isoformat(), str(item_id)]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(value: str) -> Cursor:
    """Parse a cursor from a previous page; raises InvalidInput for anything else."""
    try:
        padded = value + "=" * (-len(value) % 4)
        created_at, item_id = json.loads(base64.urlsafe_b64decode(padded.encode()))
        cursor = Cursor(datetime.fromisoformat(created_at), uuid.UUID(item_id))
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError) as exc:
        raise InvalidInput(
            "cursor is not valid", details=[{"field": "cursor", "message": "use nextCursor from a previous page"}]
        ) from exc
    if cursor.created_at.tzinfo is None:
        raise InvalidInput("cursor is not valid", details=[{"field": "cursor", "message": "missing timezone"}])
    return cursor


def newest_first(
    session: Session,
    query: Select[tuple[T]] | Select[T],
    order: tuple[InstrumentedAttribute[datetime], InstrumentedAttribute[uuid.UUID]],
    *,
    cursor: str | None,
    limit: int,
) -> Page[T]:
    """One page of `query`'s rows, newest first by `order` (created_at, id), after `cursor`.

    Raises InvalidInput for a cursor that is not a nextCursor of an earlier page.
    """
    created_at, row_id = order
    if cursor:
        after = decode_cursor(cursor)
        query = query.where(tuple_(created_at, row_id) < tuple_(after.created_at, after.id))
    rows: list[T] = list(session.scalars(query.order_by(created_at.desc(), row_id.desc()).limit(limit + 1)))
    if len(rows) <= limit:
        return Page(rows, None)
    last = cast(Any, rows[limit - 1])
    return Page(rows[:limit], encode_cursor(last.created_at, last.id))
