from __future__ import annotations

import pytest

from shared.settings import DEV_API_KEY, Settings, SettingsError, load_settings

pytestmark = pytest.mark.unit


def test_defaults_and_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("API_KEYS", "sekrit-one, b ,")
    monkeypatch.setenv("CORS_ORIGINS", "https://x.example/,http://localhost:3000")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:5000")
    monkeypatch.setenv("BEDROCK_ENDPOINT_URL", "http://127.0.0.1:5001/")
    s = load_settings()
    assert [k.get_secret_value() for k in s.api_keys] == ["sekrit-one", "b"]
    assert s.cors_origins == ["https://x.example", "http://localhost:3000"]
    assert s.endpoint_for("dynamodb") == "http://127.0.0.1:5000"
    assert s.endpoint_for("bedrock") == "http://127.0.0.1:5001"
    assert s.namespace_for("blue") == "ChatBot/Flask"
    assert s.namespace_for("green") == "ChatBot/FastAPI"
    assert "sekrit-one" not in repr(s)  # secrets stay secret


@pytest.mark.parametrize(("env", "named"), [
    ({"BEDROCK_AGENT_ID": "has-dash"}, "BEDROCK_AGENT_ID"),
    ({"RATE_LIMIT_REQUESTS": "0"}, "RATE_LIMIT_REQUESTS"),
    ({"AGENT_READ_TIMEOUT_S": "soon"}, "AGENT_READ_TIMEOUT_S"),
    ({"CORS_ORIGINS": "ftp://x"}, "CORS_ORIGINS"),
    ({"SESSIONS_TABLE": "ab"}, "SESSIONS_TABLE"),
    ({"ENVIRONMENT": "moon"}, "ENVIRONMENT"),
])
def test_bad_settings_name_the_variable(monkeypatch: pytest.MonkeyPatch, env: dict[str, str],
                                        named: str) -> None:
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(SettingsError, match=named):
        load_settings()


def test_incoherent_settings_are_refused() -> None:
    with pytest.raises(SettingsError, match="CORS_ALLOW_CREDENTIALS"):
        load_settings(cors_origins="*", cors_allow_credentials=True)
    with pytest.raises(SettingsError, match="dev key"):
        load_settings(environment="prod", api_keys=DEV_API_KEY)
    assert Settings(environment="local", api_keys=DEV_API_KEY).api_keys


def test_metrics_storage_resolution(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().metrics_storage_resolution == 60
    monkeypatch.setenv("METRICS_STORAGE_RESOLUTION", "1")
    assert load_settings().metrics_storage_resolution == 1
    for bad in ("5", "0", "1.5", "high"):
        monkeypatch.setenv("METRICS_STORAGE_RESOLUTION", bad)
        with pytest.raises(SettingsError, match="METRICS_STORAGE_RESOLUTION"):
            load_settings()
