"""The launch environment: files first, plain variables for operators run by hand, secrets never shown."""

from __future__ import annotations

from pathlib import Path

import pytest

from switchboard import Launch, LaunchError

SECRET = "pw-Zq8x-secret"


def base(**extra: str) -> dict[str, str]:
    return {"SWITCHBOARD_ID": "dice", **extra}


def test_defaults() -> None:
    launch = Launch.from_env(base())
    assert launch.urls == ["nats://127.0.0.1:4222"]
    assert launch.config == {} and launch.heartbeat_ms == 5000 and launch.control == "nats"
    assert launch.password is None and launch.token is None


def test_the_file_variants_win_over_the_plain_ones(tmp_path: Path) -> None:
    pw, token, config = tmp_path / "pw", tmp_path / "token", tmp_path / "config.json"
    pw.write_text(SECRET + "\n")
    token.write_text("tok-from-file\r\n")
    config.write_text('{"prefix": "!file "}')
    launch = Launch.from_env(base(
        SWITCHBOARD_NATS_USER="op-dice", SWITCHBOARD_NATS_PASSWORD="plain", SWITCHBOARD_NATS_PASSWORD_FILE=str(pw),
        SWITCHBOARD_NATS_TOKEN="plain", SWITCHBOARD_NATS_TOKEN_FILE=str(token),
        SWITCHBOARD_CONFIG='{"prefix": "!env "}', SWITCHBOARD_CONFIG_FILE=str(config)))
    assert launch.password == SECRET and launch.token == "tok-from-file"
    assert launch.config == {"prefix": "!file "} and launch.config_file == str(config)
    assert SECRET not in repr(launch)


def test_the_plain_variables_still_work_and_blank_is_unset() -> None:
    launch = Launch.from_env(base(SWITCHBOARD_NATS_USER="u", SWITCHBOARD_NATS_PASSWORD=SECRET,
                                  SWITCHBOARD_CONFIG='{"a": 1}', SWITCHBOARD_NATS_TOKEN_FILE="  ",
                                  SWITCHBOARD_NATS_URL=" nats://a:1, ,nats://b:2 "))
    assert launch.password == SECRET and launch.token is None and launch.config == {"a": 1}
    assert launch.urls == ["nats://a:1", "nats://b:2"]


@pytest.mark.parametrize("env, variable", [
    ({}, "SWITCHBOARD_ID"),
    ({"SWITCHBOARD_ID": "no spaces"}, "SWITCHBOARD_ID"),
    (base(SWITCHBOARD_NATS_PASSWORD=SECRET), "SWITCHBOARD_NATS_USER"),
    (base(SWITCHBOARD_HEARTBEAT_MS="0"), "SWITCHBOARD_HEARTBEAT_MS"),
    (base(SWITCHBOARD_HEARTBEAT_MS="1e3"), "SWITCHBOARD_HEARTBEAT_MS"),
    (base(SWITCHBOARD_CONTROL="ipc"), "SWITCHBOARD_CONTROL"),
    (base(SWITCHBOARD_CONFIG='{"password": "' + SECRET + '"'), "SWITCHBOARD_CONFIG"),
    (base(SWITCHBOARD_NATS_PASSWORD_FILE="/nonexistent/pw", SWITCHBOARD_NATS_USER="u"),
     "SWITCHBOARD_NATS_PASSWORD_FILE"),
    (base(SWITCHBOARD_CONFIG_FILE="/nonexistent/config.json"), "SWITCHBOARD_CONFIG_FILE"),
])
def test_a_bad_variable_is_named_and_no_secret_shown(env: dict[str, str], variable: str) -> None:
    with pytest.raises(LaunchError) as e:
        Launch.from_env(env)
    assert e.value.variable == variable and str(e.value).startswith(variable)
    assert SECRET not in str(e.value) and e.value.kind() == "launch"


def test_an_empty_password_file_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("\n")
    with pytest.raises(LaunchError, match="is empty"):
        Launch.from_env(base(SWITCHBOARD_NATS_USER="u", SWITCHBOARD_NATS_PASSWORD_FILE=str(tmp_path / "pw")))
