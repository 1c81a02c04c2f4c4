"""/users: the caller's own account, and administration."""

from __future__ import annotations

import uuid

import falcon

from domain.users import service as users
from domain.users.models import Role, UserStatus
from ingress.context import ApiRequest
from ingress.endpoint import endpoint
from ingress.schemas.users import AdminUserUpdate, ProfileUpdate, UserListQuery, UserOut, UserPage

TAG = "users"
ADMIN = (Role.ADMIN,)


class Me:
    @endpoint("Your account", tag=TAG, response=UserOut, read_only=True)
    def on_get(self, req: ApiRequest, resp: falcon.Response) -> None:
        resp.media = UserOut.of(req.context.user).to_json()

    @endpoint("Change your name, phone or profile metadata", tag=TAG, body=ProfileUpdate, response=UserOut)
    def on_patch(self, req: ApiRequest, resp: falcon.Response) -> None:
        changes = req.context.input.model_dump(exclude_unset=True)
        if "metadata" in changes:
            changes["profile_metadata"] = changes.pop("metadata")
        user = users.update_profile(req.context.user, changes)
        resp.media = UserOut.of(user).to_json()


class UserList:
    @endpoint("List users (admin)", tag=TAG, query=UserListQuery, response=UserPage, roles=ADMIN, read_only=True)
    def on_get(self, req: ApiRequest, resp: falcon.Response) -> None:
        query: UserListQuery = req.context.query
        page = users.list_users(
            req.context.session,
            role=Role(query.role) if query.role else None,
            status=UserStatus(query.status) if query.status else None,
            cursor=query.cursor,
            limit=query.limit,
        )
        resp.media = UserPage(items=[UserOut.of(u) for u in page.items], next_cursor=page.next_cursor).to_json()


class UserItem:
    @endpoint(
        "Change a user's role, status or name (admin)",
        tag=TAG,
        body=AdminUserUpdate,
        response=UserOut,
        roles=ADMIN,
        errors=(409,),
    )
    def on_patch(self, req: ApiRequest, resp: falcon.Response, user_id: uuid.UUID) -> None:
        changes = req.context.input.model_dump(exclude_unset=True, exclude_none=True)
        if "role" in changes:
            changes["role"] = Role(changes["role"])
        if "status" in changes:
            changes["status"] = UserStatus(changes["status"])
        user = users.administer_user(req.context.session, req.context.user, user_id, changes)
        resp.media = UserOut.of(user).to_json()
