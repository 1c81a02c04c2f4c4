"""Schemas of the /auth endpoints."""

from __future__ import annotations

from typing import Literal

from pydantic import EmailStr, Field

from ingress.schemas.common import RequestModel, ResponseModel
from ingress.schemas.users import UserOut

# Length limits on credentials are generous but bounded; the 72-byte bcrypt limit on new
# passwords is a business rule checked by the domain, with its own message.
PASSWORD_FIELD = Field(min_length=1, max_length=256)
OTP_CODE = Field(min_length=6, max_length=8, pattern=r"^[0-9]+$")


class RegisterRequest(RequestModel):
    email: EmailStr = Field(max_length=254)
    password: str = PASSWORD_FIELD
    role: Literal["job_seeker", "employer", "referrer"]
    name: str = Field(min_length=1, max_length=200)


class LoginRequest(RequestModel):
    email: str = Field(min_length=1, max_length=254)
    password: str = PASSWORD_FIELD
    mfa_code: str | None = Field(default=None, min_length=6, max_length=8, pattern=r"^[0-9]+$")


class RefreshRequest(RequestModel):
    refresh_token: str = Field(min_length=1, max_length=512)


class MfaCodeRequest(RequestModel):
    code: str = OTP_CODE


class TokenResponse(ResponseModel):
    user: UserOut
    access_token: str
    refresh_token: str
    token_type: Literal["Bearer"] = "Bearer"
    expires_in: int


class MfaSetupResponse(ResponseModel):
    secret: str
    otpauth_uri: str
