import base64
import json

import pytest

from domain.core.config import SettingsError, load_settings

MASTER = base64.b64encode(b"k" * 32).decode()
STRONG_SECRET = "s" * 48


def test_development_generates_secrets_once_and_keeps_them_private(tmp_path):
    env = {"DEEPREF_ENV": "development", "DEEPREF_VAR_DIR": str(tmp_path)}
    first = load_settings(env)
    second = load_settings(env)
    assert first.secret_key == second.secret_key
    assert first.master_key == second.master_key and len(first.master_key) == 32
    stored = tmp_path / "secrets.json"
    assert stored.stat().st_mode & 0o777 == 0o600
    assert set(json.loads(stored.read_text())) == {"SECRET_KEY", "MASTER_KEY"}


@pytest.mark.parametrize(
    ("overrides", "complaint"),
    [
        ({}, "SECRET_KEY, MASTER_KEY missing"),
        ({"SECRET_KEY": "changeme", "MASTER_KEY": MASTER}, "SECRET_KEY missing or set to a placeholder"),
        ({"SECRET_KEY": "short-but-real", "MASTER_KEY": MASTER}, "at least 32 characters"),
        ({"SECRET_KEY": STRONG_SECRET, "MASTER_KEY": "not base64!"}, "MASTER_KEY must be base64"),
        (
            {"SECRET_KEY": STRONG_SECRET, "MASTER_KEY": base64.b64encode(b"x" * 16).decode()},
            "MASTER_KEY: Value error, MASTER_KEY must be base64 of exactly 32 bytes",
        ),
    ],
)
def test_production_refuses_missing_or_weak_secrets(tmp_path, overrides, complaint):
    with pytest.raises(SettingsError, match=complaint):
        load_settings({"DEEPREF_ENV": "production", "DEEPREF_VAR_DIR": str(tmp_path), **overrides})
    assert not (tmp_path / "secrets.json").exists()


def test_production_accepts_real_secrets_and_normalises_urls(tmp_path):
    settings = load_settings(
        {
            "DEEPREF_ENV": "production",
            "SECRET_KEY": STRONG_SECRET,
            "MASTER_KEY": MASTER,
            "DATABASE_URL": "postgresql://db.internal/deepref",
            "REDIS_URL": "redis://cache.internal:6379/0",
            "ALLOWED_ORIGINS": "https://app.example.com, https://admin.example.com",
            "PUBLIC_BASE_URL": "https://deepref.example.com/",
        }
    )
    assert settings.database_url == "postgresql+psycopg://db.internal/deepref"
    assert settings.effective_broker_url == "redis://cache.internal:6379/0"
    assert settings.allowed_origins == ("https://app.example.com", "https://admin.example.com")
    assert settings.public_base_url == "https://deepref.example.com"
    assert settings.bcrypt_rounds == 12


def test_unknown_environment_and_bad_numbers_are_named(tmp_path):
    with pytest.raises(SettingsError, match="DEEPREF_ENV must be"):
        load_settings({"DEEPREF_ENV": "staging"})
    with pytest.raises(SettingsError, match="invalid settings"):
        load_settings({"DEEPREF_ENV": "test", "DEEPREF_VAR_DIR": str(tmp_path), "INGRESS_PORT": "eighty"})
    with pytest.raises(SettingsError, match="AI_PROVIDER"):
        load_settings({"DEEPREF_ENV": "test", "DEEPREF_VAR_DIR": str(tmp_path), "AI_PROVIDER": "magic"})


def test_missing_urls_explain_how_to_get_them(tmp_path):
    settings = load_settings({"DEEPREF_ENV": "test", "DEEPREF_VAR_DIR": str(tmp_path)})
    with pytest.raises(SettingsError, match="make run"):
        settings.require_database_url()
    with pytest.raises(SettingsError, match="make run"):
        settings.require_redis_url()


def test_ai_settings_come_from_the_environment(tmp_path):
    base = {"DEEPREF_ENV": "test", "DEEPREF_VAR_DIR": str(tmp_path)}
    with pytest.raises(SettingsError, match="AI_PROVIDER=openrouter needs OPENROUTER_API_KEY"):
        load_settings({**base, "AI_PROVIDER": "openrouter"})
    settings = load_settings(
        {
            **base,
            "AI_PROVIDER": "openrouter",
            "OPENROUTER_API_KEY": "sk-or-test",
            "OPENROUTER_BASE_URL": "http://127.0.0.1:9/api/v1/",
            "AI_MODELS": "a/one, b/two",
            "AI_TIMEOUT_SECONDS": "12.5",
            "AI_ATTEMPTS_PER_MODEL": "2",
            "AI_BREAKER_FAILURES": "3",
            "AI_BREAKER_COOLDOWN_SECONDS": "10",
            "AI_REQUESTS_PER_MINUTE": "7",
            "AI_DAILY_BUDGET_USD": "0.25",
        }
    )
    assert settings.openrouter_base_url == "http://127.0.0.1:9/api/v1"
    assert settings.ai_models == ("a/one", "b/two")
    assert (settings.ai_timeout_seconds, settings.ai_attempts_per_model) == (12.5, 2)
    assert (settings.ai_breaker_failures, settings.ai_breaker_cooldown_seconds) == (3, 10.0)
    assert (settings.ai_requests_per_minute, settings.ai_daily_budget_usd) == (7, 0.25)
    assert "sk-or-test" not in repr(settings)


def test_the_ai_worker_pool_follows_the_provider(tmp_path):
    from ingress.cli import process_commands

    base = {"DEEPREF_ENV": "test", "DEEPREF_VAR_DIR": str(tmp_path)}
    local = process_commands(load_settings(base))["worker-ai"]
    remote = process_commands(load_settings({**base, "AI_PROVIDER": "openrouter", "OPENROUTER_API_KEY": "k"}))
    assert local[-4:] == ["--pool", "prefork", "--concurrency", "2"]
    assert remote["worker-ai"][-4:] == ["--pool", "gevent", "--concurrency", "100"]
