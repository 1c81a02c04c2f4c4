"""/auth: register, login, refresh, logout and MFA."""

from __future__ import annotations

import falcon

from domain.core.encrypted import current_keyring
from domain.users import service as users
from domain.users.models import Role, User
from domain.users.tokens import TokenPair
from ingress.context import ApiRequest
from ingress.endpoint import endpoint
from ingress.middleware import enforce
from ingress.schemas.auth import (
    LoginRequest,
    MfaCodeRequest,
    MfaSetupResponse,
    RefreshRequest,
    RegisterRequest,
    TokenResponse,
)
from ingress.schemas.users import UserOut

TAG = "auth"


def _tokens(user: User, pair: TokenPair) -> dict[str, object]:
    return TokenResponse(
        user=UserOut.of(user),
        access_token=pair.access_token,
        refresh_token=pair.refresh_token,
        expires_in=pair.expires_in,
    ).to_json()


def _strict_limit(req: ApiRequest, resp: falcon.Response, bucket: str, subject: str) -> None:
    enforce(req, resp, bucket, subject, req.context.services.settings.login_rate_limit_per_minute)


class Register:
    @endpoint(
        "Create an account (job seeker, employer or referrer)",
        tag=TAG,
        auth=False,
        body=RegisterRequest,
        response=TokenResponse,
        status=201,
        errors=(409,),
    )
    def on_post(self, req: ApiRequest, resp: falcon.Response) -> None:
        _strict_limit(req, resp, "register:ip", req.context.client_ip)
        data: RegisterRequest = req.context.input
        user, pair = users.register(
            req.context.session,
            req.context.services.accounts,
            email=data.email,
            password=data.password,
            role=Role(data.role),
            name=data.name,
        )
        resp.media = _tokens(user, pair)


class Login:
    @endpoint(
        "Log in with email and password (and a TOTP code when MFA is on)",
        tag=TAG,
        auth=False,
        body=LoginRequest,
        response=TokenResponse,
        errors=(401,),
    )
    def on_post(self, req: ApiRequest, resp: falcon.Response) -> None:
        data: LoginRequest = req.context.input
        _strict_limit(req, resp, "login:ip", req.context.client_ip)
        _strict_limit(req, resp, "login:email", current_keyring().email_index(data.email).hex())
        user, pair = users.login(
            req.context.session,
            req.context.services.accounts,
            email=data.email,
            password=data.password,
            mfa_code=data.mfa_code,
        )
        resp.media = _tokens(user, pair)


class Refresh:
    @endpoint(
        "Exchange a refresh token for new tokens (the old one is spent)",
        tag=TAG,
        auth=False,
        body=RefreshRequest,
        response=TokenResponse,
        errors=(401,),
    )
    def on_post(self, req: ApiRequest, resp: falcon.Response) -> None:
        data: RefreshRequest = req.context.input
        user, pair = users.refresh(req.context.session, req.context.services.accounts, data.refresh_token)
        resp.media = _tokens(user, pair)


class Logout:
    @endpoint("End the session a refresh token belongs to", tag=TAG, body=RefreshRequest, status=204)
    def on_post(self, req: ApiRequest, resp: falcon.Response) -> None:
        users.logout(req.context.session, req.context.user, req.context.input.refresh_token)


class MfaSetup:
    @endpoint(
        "Start MFA setup: a new TOTP secret, not enforced until enabled",
        tag=TAG,
        response=MfaSetupResponse,
        errors=(409,),
    )
    def on_post(self, req: ApiRequest, resp: falcon.Response) -> None:
        secret, uri = users.start_mfa_setup(req.context.user)
        resp.media = MfaSetupResponse(secret=secret, otpauth_uri=uri).to_json()


class MfaEnable:
    @endpoint(
        "Enable MFA with a code from the authenticator", tag=TAG, body=MfaCodeRequest, response=UserOut, errors=(409,)
    )
    def on_post(self, req: ApiRequest, resp: falcon.Response) -> None:
        users.enable_mfa(req.context.user, req.context.input.code)
        resp.media = UserOut.of(req.context.user).to_json()


class MfaDisable:
    @endpoint("Disable MFA (a current code is required)", tag=TAG, body=MfaCodeRequest, response=UserOut, errors=(409,))
    def on_post(self, req: ApiRequest, resp: falcon.Response) -> None:
        users.disable_mfa(req.context.user, req.context.input.code)
        resp.media = UserOut.of(req.context.user).to_json()
