"""/ai/usage and /admin/ai/usage: what AI calls cost, for the caller and for administrators."""

from __future__ import annotations

import falcon

from domain.ai import usage
from domain.users.models import Role
from ingress.context import ApiRequest
from ingress.endpoint import endpoint
from ingress.schemas.ai import AdminUsageQuery, DailyUsageOut, DailyUsagePage, UsageQuery, UserUsageOut, UserUsagePage

TAG = "ai"


class MyUsage:
    @endpoint(
        "Your AI calls per UTC day and model (calls, tokens, cost), newest day first",
        tag=TAG,
        query=UsageQuery,
        response=DailyUsagePage,
        read_only=True,
    )
    def on_get(self, req: ApiRequest, resp: falcon.Response) -> None:
        query: UsageQuery = req.context.query
        period = usage.Period.of(query.from_, query.to)
        page = usage.usage_by_day(
            req.context.session, req.context.user.id, period, cursor=query.cursor, limit=query.limit
        )
        resp.media = DailyUsagePage(
            items=[DailyUsageOut.of(totals) for totals in page.items],
            next_cursor=page.next_cursor,
            from_=period.first,
            to=period.last,
        ).to_json()


class AllUsage:
    @endpoint(
        "Every user's AI calls per model over a period of UTC days (admin)",
        tag=TAG,
        query=AdminUsageQuery,
        response=UserUsagePage,
        roles=(Role.ADMIN,),
        read_only=True,
    )
    def on_get(self, req: ApiRequest, resp: falcon.Response) -> None:
        query: AdminUsageQuery = req.context.query
        period = usage.Period.of(query.from_, query.to)
        page = usage.usage_by_user(
            req.context.session, period, user_id=query.user_id, cursor=query.cursor, limit=query.limit
        )
        resp.media = UserUsagePage(
            items=[UserUsageOut.of(totals) for totals in page.items],
            next_cursor=page.next_cursor,
            from_=period.first,
            to=period.last,
        ).to_json()
