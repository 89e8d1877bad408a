"""The job API's tokens: settings, token files, the generated token, sessions."""

from __future__ import annotations

import multiprocessing
import stat
import time
from pathlib import Path

import pytest
import yaml
from pydantic import SecretStr

from landfall.api_tokens import (
    GENERATED_TOKEN_FILE,
    RELOAD_INTERVAL_S,
    Principal,
    TokenStore,
    ensure_generated_token,
    read_token_file,
)
from landfall.config import REVEAL_SECRETS, ApiSettings, ApiToken, Settings, load_settings
from landfall.errors import ConfigError

OPERATOR = "operator-token-0123456789abcdef"
READER = "reader-token-0123456789abcdef"


def _settings(home: Path, **api: object) -> Settings:
    return Settings(home=home, api=ApiSettings(**api))  # type: ignore[arg-type]


def _write(path: Path, *lines: str) -> Path:
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)
    return path


def test_a_token_prints_masked_and_only_the_stack_s_dump_reveals_it(tmp_path: Path) -> None:
    settings = _settings(tmp_path, tokens=[ApiToken(token=SecretStr(OPERATOR), role="operator")])
    assert OPERATOR not in repr(settings) and OPERATOR not in str(settings)
    assert OPERATOR not in yaml.safe_dump(settings.model_dump(mode="json"))
    revealed = settings.model_dump(mode="json", context=REVEAL_SECRETS)
    assert revealed["api"]["tokens"][0]["token"] == OPERATOR  # the mode-600 stack file


@pytest.mark.parametrize(
    ("token", "says"),
    [("short-secret", "at least 16"), ("has a space in it!!", "visible ASCII")],
)
def test_weak_tokens_are_refused_without_being_quoted(
    tmp_path: Path, token: str, says: str
) -> None:
    config = tmp_path / "landfall.yaml"
    config.write_text(yaml.safe_dump({"api": {"tokens": [{"token": token}]}}))
    with pytest.raises(ConfigError, match=says) as refused:
        load_settings(config, environ={})
    assert token not in str(refused.value)


def test_a_token_file_gives_roles_and_names_and_skips_comments(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "tokens",
        "# the team's tokens",
        "",
        f"operator {OPERATOR} ci",
        f"  read {READER}  ",
    )
    tokens = read_token_file(path)
    assert [(t.role, t.name, t.token.get_secret_value()) for t in tokens] == [
        ("operator", "ci", OPERATOR),
        ("read", None, READER),
    ]


@pytest.mark.parametrize(
    ("lines", "says"),
    [
        ([f"admin {OPERATOR}"], "line 1: expected 'ROLE TOKEN"),
        ([f"read {READER}", OPERATOR], "line 2: expected"),
        (["read tooshort"], "line 1: .*at least 16"),
        (["# nothing but comments"], "holds no token"),
    ],
)
def test_a_bad_token_file_names_the_line_never_the_token(
    tmp_path: Path, lines: list[str], says: str
) -> None:
    path = _write(tmp_path / "tokens", *lines)
    with pytest.raises(ConfigError, match=says) as refused:
        read_token_file(path)
    for secret in (OPERATOR, READER, "tooshort"):
        assert secret not in str(refused.value)


def test_the_generated_token_is_made_once_mode_600_and_kept(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    path = ensure_generated_token(settings)
    assert path == tmp_path / GENERATED_TOKEN_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    (token,) = read_token_file(path)
    assert token.role == "operator" and len(token.token.get_secret_value()) >= 40
    before = path.read_text()
    path.chmod(0o644)  # widened by hand: narrowed again, the token kept
    assert ensure_generated_token(settings) == path
    assert path.read_text() == before and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == [GENERATED_TOKEN_FILE]  # no leftovers


def _generate(home: str) -> str:
    path = ensure_generated_token(_settings(Path(home)))
    assert path is not None
    return read_token_file(path)[0].token.get_secret_value()


def test_processes_starting_together_agree_on_one_token(tmp_path: Path) -> None:
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        tokens = pool.map(_generate, [str(tmp_path)] * 8)
    assert len(set(tokens)) == 1


def test_nothing_is_generated_when_tokens_are_configured(tmp_path: Path) -> None:
    configured = _settings(tmp_path, tokens=[ApiToken(token=SecretStr(OPERATOR))])
    assert ensure_generated_token(configured) is None
    from_file = _settings(tmp_path, token_file=_write(tmp_path / "t", f"read {READER}"))
    assert ensure_generated_token(from_file) is None
    assert not (tmp_path / GENERATED_TOKEN_FILE).exists()


def test_tokens_authenticate_with_their_role_and_wrong_ones_do_not(tmp_path: Path) -> None:
    settings = _settings(
        tmp_path,
        tokens=[ApiToken(token=SecretStr(OPERATOR), role="operator", name="ci")],
        token_file=_write(tmp_path / "tokens", f"read {READER} dash"),
    )
    store = TokenStore(settings)
    assert store.authenticate(OPERATOR) == Principal("ci", "operator")
    assert store.authenticate(READER) == Principal("dash", "read")
    for wrong in ("", OPERATOR[:-1], OPERATOR + "x", READER.upper(), "\udcff" * 20):
        assert store.authenticate(wrong) is None
    assert Principal("ci", "operator").may("read") and not Principal("d", "read").may("operator")


def test_a_session_is_signed_bound_to_its_token_and_expires(tmp_path: Path) -> None:
    tokens = _write(tmp_path / "tokens", f"read {READER} dash", f"operator {OPERATOR} ci")
    store = TokenStore(_settings(tmp_path, token_file=tokens))
    session = store.session_value(READER, 3600)
    assert session is not None and READER not in session
    assert store.session_principal(session) == Principal("dash", "read")
    assert store.session_value("not-a-token-at-all", 3600) is None
    _, expires, token_id, signature = session.split(".")
    forged = [
        f"v1.{int(expires) + 1}.{token_id}.{signature}",  # a longer life
        # The last character changed (to another: a signature may end in 0).
        f"v1.{expires}.{token_id}.{signature[:-1]}{'1' if signature.endswith('0') else '0'}",
        f"v1.{expires}.{token_id}.{'é' * 64}",
        f"v2.{expires}.{token_id}.{signature}",
        "v1." + "9" * 5000,
    ]
    for value in forged:
        assert store.session_principal(value) is None, value
    expired = store.session_value(READER, -1)
    assert expired is not None and store.session_principal(expired) is None


def test_a_form_token_is_bound_to_one_live_session(tmp_path: Path) -> None:
    tokens = _write(tmp_path / "tokens", f"read {READER} dash", f"operator {OPERATOR} ci")
    store = TokenStore(_settings(tmp_path, token_file=tokens))
    first, later = store.session_value(OPERATOR, 3600), store.session_value(OPERATOR, 7200)
    assert first is not None and later is not None
    token = store.form_token(first)
    assert token is not None and OPERATOR not in token
    assert store.form_token_matches(first, token)
    # Another session's token, a changed one, none, or a forged session: refused.
    assert not store.form_token_matches(later, token)
    assert not store.form_token_matches(first, token[:-1] + ("1" if token[-1] == "0" else "0"))
    assert not store.form_token_matches(first, "")
    forged = first.replace(first.split(".")[1], str(int(first.split(".")[1]) + 1), 1)
    assert store.form_token(forged) is None and not store.form_token_matches(forged, token)
    expired = store.session_value(OPERATOR, -1)
    assert expired is not None and store.form_token(expired) is None


def test_a_changed_token_file_is_read_again_and_a_broken_one_accepts_none(
    tmp_path: Path,
) -> None:
    path = _write(tmp_path / "tokens", f"read {READER} dash")
    store = TokenStore(_settings(tmp_path, token_file=path))
    session = store.session_value(READER, 3600)
    assert session is not None
    _write(path, f"operator {OPERATOR} ci")  # the read token revoked, another added
    time.sleep(RELOAD_INTERVAL_S + 0.1)
    assert store.authenticate(READER) is None and store.session_principal(session) is None
    assert store.authenticate(OPERATOR) == Principal("ci", "operator")
    _write(path, f"operator {OPERATOR} ci", "oops")
    time.sleep(RELOAD_INTERVAL_S + 0.1)
    assert store.authenticate(OPERATOR) is None  # fail closed until it is fixed
    _write(path, f"operator {OPERATOR} ci")
    time.sleep(RELOAD_INTERVAL_S + 0.1)
    assert store.authenticate(OPERATOR) == Principal("ci", "operator")


def test_a_missing_token_file_stops_the_api_at_start(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        TokenStore(_settings(tmp_path, token_file=Path("no-such-file")))
