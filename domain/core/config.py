"""Typed settings read from the environment, validated once at start-up."""

from __future__ import annotations

import base64
import binascii
import json
import os
import secrets
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

Environment = Literal["development", "test", "production"]

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_VAR_DIR = PROJECT_ROOT / "var"

# Values that must never be used as secrets in production (copied from examples and docs).
KNOWN_PLACEHOLDERS = frozenset({"", "changeme", "change-me", "secret", "dev", "development", "test"})
MIN_SECRET_KEY_LENGTH = 32


class SettingsError(RuntimeError):
    """The environment does not describe a runnable configuration."""


class Settings(BaseModel):
    """Everything the processes need to know about their environment."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    env: Environment = "development"
    database_url: str | None = None
    redis_url: str | None = None
    broker_url: str | None = None
    secret_key: str
    master_key: bytes = Field(repr=False)
    public_base_url: str = "http://127.0.0.1:8000"
    allowed_origins: tuple[str, ...] = ()
    trusted_proxies: tuple[str, ...] = ("127.0.0.1",)
    ai_provider: Literal["local", "openrouter"] = "local"
    openrouter_api_key: str | None = Field(default=None, repr=False)
    openrouter_base_url: str = "https://openrouter.ai/api/v1"
    # Models in order of preference; the later ones are fallbacks.
    ai_models: tuple[str, ...] = ("openai/gpt-4o-mini", "anthropic/claude-3.5-haiku")
    ai_timeout_seconds: float = Field(default=30.0, gt=0)
    # HTTP attempts per model before falling back to the next one.
    ai_attempts_per_model: int = Field(default=3, ge=1)
    # A model's breaker opens after this many failures in a row, for the cool-down.
    ai_breaker_failures: int = Field(default=5, ge=1)
    ai_breaker_cooldown_seconds: float = Field(default=30.0, gt=0)
    # Per user: AI requests per minute and spend per UTC day.
    ai_requests_per_minute: int = Field(default=10, ge=1)
    ai_daily_budget_usd: float = Field(default=1.0, ge=0)
    smtp_url: str | None = None
    email_from: str = "DeepRef <no-reply@deepref.local>"
    sms_provider: Literal["file", "twilio"] = "file"
    twilio_account_sid: str | None = None
    twilio_auth_token: str | None = Field(default=None, repr=False)
    twilio_api_url: str = "https://api.twilio.com"
    sms_from: str = "DeepRef"
    celery_visibility_timeout: int = 1800
    # Seconds a task may run before it is killed; must stay below the visibility timeout.
    task_time_limit: int = 300
    task_max_attempts: int = Field(default=5, ge=1)
    # How often beat publishes outbox rows left unpublished, and looks for lost operations.
    outbox_relay_seconds: float = Field(default=2.0, gt=0)
    # Outbox rows no worker has claimed after this long are published again by beat.
    outbox_grace_seconds: float = Field(default=30.0, ge=0)
    reaper_seconds: float = Field(default=30.0, gt=0)
    audit_anchor_seconds: float = Field(default=3600.0, gt=0)
    # How often beat appends pending audit facts, in case a wake-up was lost.
    audit_drain_seconds: float = Field(default=5.0, gt=0)
    # How often beat sends due reference reminders and expires unanswered requests.
    reference_sweep_seconds: float = Field(default=300.0, gt=0)
    # Referee link requests per minute, per link and per client IP.
    referee_rate_limit_per_minute: int = Field(default=30, ge=1)
    # Seconds a public job-listing page may be served from Redis; 0 disables the cache.
    job_listing_cache_seconds: float = Field(default=30.0, ge=0)
    relay_max_connections: int = Field(default=10_000, ge=1)
    relay_heartbeat_seconds: float = Field(default=15.0, gt=0)
    ingress_port: int = 8000
    relay_port: int = 8001
    flower_port: int = 5555
    var_dir: Path = DEFAULT_VAR_DIR
    # Tunables with production-grade defaults; tests lower the expensive ones.
    bcrypt_rounds: int = Field(default=12, ge=4, le=16)
    access_token_ttl: int = 15 * 60
    refresh_token_ttl: int = 30 * 24 * 3600
    max_body_bytes: int = 1024 * 1024
    rate_limit_per_minute: int = 100
    login_rate_limit_per_minute: int = 10
    db_pool_size: int = 10
    db_pool_timeout: float = 5.0
    jwt_issuer: str = "deepref"
    jwt_audience: str = "deepref-api"

    @field_validator("master_key")
    @classmethod
    def _master_key_is_32_bytes(cls, value: bytes) -> bytes:
        if len(value) != 32:
            raise ValueError("MASTER_KEY must be base64 of exactly 32 bytes")
        return value

    @model_validator(mode="after")
    def _tasks_finish_before_redelivery(self) -> Settings:
        if self.task_time_limit >= self.celery_visibility_timeout:
            raise ValueError(
                "TASK_TIME_LIMIT must be below CELERY_VISIBILITY_TIMEOUT, or running tasks get delivered twice"
            )
        if self.ai_provider == "openrouter" and not (self.openrouter_api_key and self.ai_models):
            raise ValueError("AI_PROVIDER=openrouter needs OPENROUTER_API_KEY and AI_MODELS")
        if self.sms_provider == "twilio" and not (self.twilio_account_sid and self.twilio_auth_token):
            raise ValueError("SMS_PROVIDER=twilio needs TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN")
        return self

    @property
    def effective_broker_url(self) -> str | None:
        return self.broker_url or self.redis_url

    def require_database_url(self) -> str:
        if not self.database_url:
            raise SettingsError(
                "DATABASE_URL is not set. Set it, or start everything with `make run`, "
                "which starts an embedded PostgreSQL."
            )
        return self.database_url

    def require_redis_url(self) -> str:
        if not self.redis_url:
            raise SettingsError(
                "REDIS_URL is not set. Set it, or start everything with `make run`, which starts an embedded Redis."
            )
        return self.redis_url


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Build the settings from the environment (and `.env` in development).

    Raises SettingsError with a message naming the variable when the environment is
    unusable; in production a missing or placeholder secret is such an error.
    """
    env = dict(os.environ if environ is None else environ)
    mode = env.get("DEEPREF_ENV", "development")
    if mode not in ("development", "test", "production"):
        raise SettingsError(f"DEEPREF_ENV must be development, test or production, not {mode!r}")
    if mode == "development" and environ is None:
        env = {**_read_dotenv(PROJECT_ROOT / ".env"), **env}
    var_dir = Path(env.get("DEEPREF_VAR_DIR", str(DEFAULT_VAR_DIR)))
    secret_key, master_key = _secrets(env, mode, var_dir)
    try:
        return Settings(
            env=mode,
            database_url=_normalise_database_url(env.get("DATABASE_URL")),
            redis_url=env.get("REDIS_URL") or None,
            broker_url=env.get("BROKER_URL") or None,
            secret_key=secret_key,
            master_key=master_key,
            public_base_url=env.get("PUBLIC_BASE_URL", "http://127.0.0.1:8000").rstrip("/"),
            allowed_origins=_csv(env.get("ALLOWED_ORIGINS", "")),
            trusted_proxies=_csv(env.get("TRUSTED_PROXIES", "127.0.0.1")),
            ai_provider=env.get("AI_PROVIDER", "local"),
            **_ai_settings(env),
            smtp_url=env.get("SMTP_URL") or None,
            email_from=env.get("EMAIL_FROM", "DeepRef <no-reply@deepref.local>"),
            sms_provider=env.get("SMS_PROVIDER", "file"),
            twilio_account_sid=env.get("TWILIO_ACCOUNT_SID") or None,
            twilio_auth_token=env.get("TWILIO_AUTH_TOKEN") or None,
            twilio_api_url=env.get("TWILIO_API_URL", "https://api.twilio.com").rstrip("/"),
            sms_from=env.get("SMS_FROM", "DeepRef"),
            celery_visibility_timeout=int(env.get("CELERY_VISIBILITY_TIMEOUT", "1800")),
            task_time_limit=int(env.get("TASK_TIME_LIMIT", "300")),
            task_max_attempts=int(env.get("TASK_MAX_ATTEMPTS", "5")),
            outbox_relay_seconds=float(env.get("OUTBOX_RELAY_SECONDS", "2")),
            outbox_grace_seconds=float(env.get("OUTBOX_GRACE_SECONDS", "30")),
            reaper_seconds=float(env.get("REAPER_SECONDS", "30")),
            audit_anchor_seconds=float(env.get("AUDIT_ANCHOR_SECONDS", "3600")),
            audit_drain_seconds=float(env.get("AUDIT_DRAIN_SECONDS", "5")),
            reference_sweep_seconds=float(env.get("REFERENCE_SWEEP_SECONDS", "300")),
            referee_rate_limit_per_minute=int(env.get("REFEREE_RATE_LIMIT_PER_MINUTE", "30")),
            job_listing_cache_seconds=float(env.get("JOB_LISTING_CACHE_SECONDS", "30")),
            relay_max_connections=int(env.get("RELAY_MAX_CONNECTIONS", "10000")),
            relay_heartbeat_seconds=float(env.get("RELAY_HEARTBEAT_SECONDS", "15")),
            ingress_port=int(env.get("INGRESS_PORT", "8000")),
            relay_port=int(env.get("RELAY_PORT", "8001")),
            flower_port=int(env.get("FLOWER_PORT", "5555")),
            var_dir=var_dir,
            bcrypt_rounds=int(env.get("BCRYPT_ROUNDS", "4" if mode == "test" else "12")),
            max_body_bytes=int(env.get("MAX_BODY_BYTES", str(1024 * 1024))),
            rate_limit_per_minute=int(env.get("RATE_LIMIT_PER_MINUTE", "100")),
            login_rate_limit_per_minute=int(env.get("LOGIN_RATE_LIMIT_PER_MINUTE", "10")),
            db_pool_size=int(env.get("DB_POOL_SIZE", "10")),
            db_pool_timeout=float(env.get("DB_POOL_TIMEOUT", "5")),
        )
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in exc.errors())
        raise SettingsError(f"invalid settings: {problems}") from exc
    except ValueError as exc:
        raise SettingsError(f"invalid settings: {exc}") from exc


def _ai_settings(env: Mapping[str, str]) -> dict[str, object]:
    """The AI gateway's settings that the environment sets (the rest keep their defaults)."""
    names: dict[str, tuple[str, Callable[[str], object]]] = {
        "OPENROUTER_API_KEY": ("openrouter_api_key", str),
        "OPENROUTER_BASE_URL": ("openrouter_base_url", lambda v: v.rstrip("/")),
        "AI_MODELS": ("ai_models", _csv),
        "AI_TIMEOUT_SECONDS": ("ai_timeout_seconds", float),
        "AI_ATTEMPTS_PER_MODEL": ("ai_attempts_per_model", int),
        "AI_BREAKER_FAILURES": ("ai_breaker_failures", int),
        "AI_BREAKER_COOLDOWN_SECONDS": ("ai_breaker_cooldown_seconds", float),
        "AI_REQUESTS_PER_MINUTE": ("ai_requests_per_minute", int),
        "AI_DAILY_BUDGET_USD": ("ai_daily_budget_usd", float),
    }
    return {field: parse(env[name]) for name, (field, parse) in names.items() if env.get(name)}


def _secrets(env: Mapping[str, str], mode: str, var_dir: Path) -> tuple[str, bytes]:
    secret_key = env.get("SECRET_KEY", "")
    master_key_b64 = env.get("MASTER_KEY", "")
    if mode == "production":
        missing = [
            name
            for name, value in (("SECRET_KEY", secret_key), ("MASTER_KEY", master_key_b64))
            if value.strip().lower() in KNOWN_PLACEHOLDERS
        ]
        if missing:
            raise SettingsError(
                f"production refuses to start: {', '.join(missing)} missing or set to a placeholder; "
                'generate them with `python -c "import secrets,base64;'
                'print(base64.b64encode(secrets.token_bytes(32)).decode())"`'
            )
        if len(secret_key) < MIN_SECRET_KEY_LENGTH:
            raise SettingsError(
                f"production refuses to start: SECRET_KEY must be at least {MIN_SECRET_KEY_LENGTH} characters"
            )
    elif not secret_key or not master_key_b64:
        generated = _development_secrets(var_dir)
        secret_key = secret_key or generated["SECRET_KEY"]
        master_key_b64 = master_key_b64 or generated["MASTER_KEY"]
    try:
        master_key = base64.b64decode(master_key_b64, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SettingsError("MASTER_KEY must be base64 of exactly 32 bytes") from exc
    return secret_key, master_key


def _development_secrets(var_dir: Path) -> dict[str, str]:
    """Generate the development secrets once and keep them under var/ (mode 0600)."""
    path = var_dir / "secrets.json"
    if path.exists():
        stored: dict[str, str] = json.loads(path.read_text())
        return stored
    var_dir.mkdir(parents=True, exist_ok=True)
    generated = {
        "SECRET_KEY": secrets.token_urlsafe(48),
        "MASTER_KEY": base64.b64encode(secrets.token_bytes(32)).decode(),
    }
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process generated them first
        return _development_secrets(var_dir)
    with os.fdopen(fd, "w") as handle:
        json.dump(generated, handle)
    return generated


def _normalise_database_url(url: str | None) -> str | None:
    """Accept plain `postgresql://` URLs and point SQLAlchemy at psycopg 3."""
    if not url:
        return None
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def _csv(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


def _read_dotenv(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    from dotenv import dotenv_values

    return {key: value for key, value in dotenv_values(path).items() if value is not None}
