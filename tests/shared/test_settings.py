from __future__ import annotations

import pytest

from shared.settings import DEV_API_KEY, Settings, SettingsError, load_settings, settings_or_exit

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


@pytest.mark.parametrize("environment", ["staging", "prod"])
def test_empty_api_keys_are_refused_in_staging_and_prod(environment: str) -> None:
    with pytest.raises(SettingsError, match="API_KEYS is empty") as info:
        load_settings(environment=environment)
    assert "AUTH_DISABLED=true" in str(info.value)  # the way out is named
    assert load_settings(environment=environment, api_keys="k-1").api_keys
    assert not load_settings(environment=environment, auth_disabled=True).api_keys
    with pytest.raises(SettingsError, match="contradicts"):
        load_settings(environment=environment, auth_disabled=True, api_keys="k-1")


@pytest.mark.parametrize("environment", ["local", "dev", "test"])
def test_empty_api_keys_are_allowed_in_development(environment: str) -> None:
    assert not load_settings(environment=environment).api_keys


def test_settings_or_exit_is_one_line_and_status_2(monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("ENVIRONMENT", "prod")
    monkeypatch.delenv("API_KEYS", raising=False)
    monkeypatch.delenv("AUTH_DISABLED", raising=False)
    with pytest.raises(SystemExit) as info:
        settings_or_exit()
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "API_KEYS" in err
    assert "Value error" not in err
    monkeypatch.setenv("API_KEYS", "k-1")
    assert settings_or_exit().environment == "prod"


def test_trusted_proxy_hops(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().trusted_proxy_hops == 1
    monkeypatch.setenv("TRUSTED_PROXY_HOPS", "2")
    assert load_settings().trusted_proxy_hops == 2
    for bad in ("0", "-1", "11", "one"):
        monkeypatch.setenv("TRUSTED_PROXY_HOPS", bad)
        with pytest.raises(SettingsError, match="TRUSTED_PROXY_HOPS"):
            load_settings()


def test_metrics_access(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().metrics_access == "open"  # the harness and rehearsal read /metrics
    for value in ("off", "open"):
        monkeypatch.setenv("METRICS_ACCESS", value)
        assert load_settings().metrics_access == value
    monkeypatch.setenv("METRICS_ACCESS", "key")
    with pytest.raises(SettingsError, match="METRICS_API_KEY"):
        load_settings()
    monkeypatch.setenv("METRICS_API_KEY", "scrape-token")
    s = load_settings()
    assert s.metrics_api_key is not None
    assert "scrape-token" not in repr(s)
    monkeypatch.setenv("METRICS_ACCESS", "public")
    with pytest.raises(SettingsError, match="METRICS_ACCESS"):
        load_settings()


def test_metrics_shutdown_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().metrics_shutdown_timeout_s == 5.0
    monkeypatch.setenv("METRICS_SHUTDOWN_TIMEOUT_S", "0.5")
    assert load_settings().metrics_shutdown_timeout_s == 0.5
    for bad in ("0", "61", "soon"):
        monkeypatch.setenv("METRICS_SHUTDOWN_TIMEOUT_S", bad)
        with pytest.raises(SettingsError, match="METRICS_SHUTDOWN_TIMEOUT_S"):
            load_settings()
