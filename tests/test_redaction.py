"""Redaction fails closed, at every depth and in every channel.

Each test records real tracked calls into the test's own SQLite store, waits
with ``pcs.flush()``, then reads every byte pcs wrote — the database, its WAL,
the artifact folder and the journal (all under the test's ``tmp_path``) — and
looks for the secrets.
"""

from __future__ import annotations

import dataclasses
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient
from replay_support import CodeDir

import pcs
from pcs import _canon, _redaction
from pcs.component_run import ComponentRun

# Each secret below is unique, so finding its bytes anywhere means it leaked.
BEARER = "Bearer hdrsecret0123456789"
DB_PASSWORD = "cfgpw-7f3a9c"
DC_TOKEN = "dctok-91b2"
PYD_KEY = "pydkey-44c1"
ATTRS_SECRET = "attrsec-9912"
OBJ_PASSWORD = "objpw-5521"
COOKIE = "cookie-sess-771"
RETURN_KEY = "retkey-3321"
RUN_PASSWORD = "runpw-1188"
RUN_NESTED = "runpw-nested-99"
WRAPPED = "wrapped-8810"
AWS = "AKIAQWERTYUIOP123456"
SK = "sk-" + "ZXCVb" * 6
GHP = "ghp_" + "Q1w2e" * 8
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJqd3R1c2VyIn0.c2lnbmF0dXJlMTIz"
PEM = "-----BEGIN RSA PRIVATE KEY-----\nMIIEpemsecret77\n-----END RSA PRIVATE KEY-----"
URL = "postgres://admin:urlpw-6612@db.example/x"
SLACK = "xoxb-112233445566-slacksecret"
BASIC = "Basic dXNlcjpwYXNzd29yZA=="

#: what must never appear: for each secret, a part that identifies it
NEEDLES = [
    "hdrsecret0123456789", DB_PASSWORD, DC_TOKEN, PYD_KEY, ATTRS_SECRET, OBJ_PASSWORD, COOKIE,
    RETURN_KEY, RUN_PASSWORD, RUN_NESTED, WRAPPED, AWS, SK, GHP, JWT, "MIIEpemsecret77",
    "urlpw-6612", "slacksecret", "dXNlcjpwYXNzd29yZA",
]


@dataclasses.dataclass
class Creds:
    user: str
    token: str


class Plain:
    def __init__(self) -> None:
        self.password = OBJ_PASSWORD
        self.region = "eu"


@pytest.fixture(autouse=True)
def default_policy() -> Iterator[None]:
    pcs.redaction.reset()
    yield
    pcs.redaction.reset()


def leaks(root: Path, needles: list[str] = NEEDLES) -> dict[str, list[str]]:
    """Every needle found in any file under ``root`` (apart from the test's own code)."""
    assert pcs.flush(timeout=60), "pcs.flush() timed out"
    found: dict[str, list[str]] = {}
    files = [p for p in root.rglob("*") if p.is_file() and "code" not in p.parts]
    assert any(p.name == "mlflow.db" for p in files)
    for path in files:
        data = path.read_bytes()
        hits = [n for n in needles if n.encode() in data]
        if hits:
            found[str(path.relative_to(root))] = hits
    return found


@pytest.fixture
def code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[CodeDir]:
    folder = CodeDir(tmp_path / "code", monkeypatch)
    yield folder
    folder.cleanup()


def last() -> ComponentRun:
    run = pcs.last_run()
    assert isinstance(run, ComponentRun)
    return run


def test_secrets_at_every_depth_and_channel_never_reach_the_store(
    tmp_path: Path, client: MlflowClient
) -> None:
    @pcs.tracked
    def call(headers: dict[str, str], config: dict[str, Any], user: Creds,
             cookies: dict[str, str], obj: Plain, wrapped: dict[str, Any],
             patterns: list[str], tokenizer: str, author: str) -> dict[str, str]:
        return {"api_key": RETURN_KEY, "status": "ok", "note": f"got {JWT}"}

    with pcs.run("outer", params={"password": RUN_PASSWORD, "db": {"password": RUN_NESTED},
                                  "lr": 0.1, "url": URL}) as outer:
        result = call(
            headers={"Authorization": BEARER, "Accept": "json"},
            config={"db": {"password": DB_PASSWORD, "host": "db.local"}},
            user=Creds(user="bob", token=DC_TOKEN),
            cookies={"session": COOKIE},
            obj=Plain(),
            wrapped={"x": pcs.Secret(WRAPPED), "n": 1},
            patterns=[AWS, SK, GHP, JWT, PEM, URL, SLACK, BASIC, "plain text"],
            tokenizer="bert-base-uncased",
            author="ada",
        )
        run = last()
    assert result["api_key"] == RETURN_KEY  # the caller's value is untouched
    assert leaks(tmp_path) == {}

    params = client.get_run(run.identifier).data.params
    assert params["arg.tokenizer"] == "bert-base-uncased"
    assert params["arg.author"] == "ada"
    assert params["arg.headers"] == "{'Accept': 'json', 'Authorization': <redacted>}"
    assert params["arg.config"] == "{'db': {'host': 'db.local', 'password': <redacted>}}"
    assert params["arg.cookies"] == "<redacted>"  # a secret name: the whole value
    outer_params = client.get_run(outer.identifier).data.params
    assert outer_params["password"] == "<redacted>"
    assert outer_params["db"] == "{'password': <redacted>}"
    assert outer_params["url"] == "<redacted>"
    assert outer_params["lr"] == "0.1"

    aset = run.run_command.argument_set
    redacted = aset.redacted
    assert any("['headers']['Authorization']" in p for p in redacted)
    assert any("['config']['db']['password']" in p for p in redacted)
    assert any("['wrapped']['x']: a pcs.Secret" in p for p in redacted)
    assert sum("['patterns'][" in p for p in redacted) == 8  # all but "plain text"
    # a dataclass is encoded field by field (the types plugin): its secret field is redacted
    assert any("['user']<dataclass>['fields']['token']" in p for p in redacted)
    reasons = "; ".join(run.not_reproducible_reasons)
    assert "obj.password" in reasons
    assert "rerun(overrides={'config': ...})" in reasons

    returned = run.load_return_value()
    assert returned["status"] == "ok"
    assert returned["api_key"] == _canon.Redacted("redacted (its name looks like a secret)")
    assert isinstance(returned["note"], _canon.Redacted)


def test_pydantic_and_attrs_fields_are_redacted(tmp_path: Path) -> None:
    pydantic = pytest.importorskip("pydantic", reason="pydantic is not installed")
    attrs = pytest.importorskip("attrs", reason="attrs is not installed")

    class Settings(pydantic.BaseModel):  # type: ignore[misc,name-defined]
        api_key: str
        retries: int = 3

    @attrs.define
    class Vault:
        secret: str
        name: str

    @pcs.tracked
    def connect(settings: Any, vault: Any, nested: dict[str, Any]) -> int:
        return 1

    connect(Settings(api_key=PYD_KEY), Vault(ATTRS_SECRET, "main"),
            {"inner": [Vault(ATTRS_SECRET, "x")]})
    assert leaks(tmp_path) == {}
    reasons = "; ".join(last().not_reproducible_reasons)
    assert "settings.api_key" in reasons
    assert "vault.secret" in reasons
    assert "nested['inner'][0].secret" in reasons


def test_secret_values_in_plain_positional_args_skip_the_fast_path(
    tmp_path: Path, client: MlflowClient
) -> None:
    @pcs.tracked
    def plain(a: str, b: str, c: str) -> int:
        return 0

    tracker = plain.__pcs_tracked__  # type: ignore[attr-defined]
    assert tracker.fast_arguments(("adam", "resnet50_v2", "cuda:0")) is not None
    for secret in (AWS, SK, GHP, JWT, URL, SLACK, BASIC, "x://u:p@h"):
        assert tracker.fast_arguments(("adam", secret, "cuda:0")) is None, secret
        plain("adam", secret, "cuda:0")
        assert client.get_run(last().identifier).data.params["arg.b"] == "<redacted>"
    assert leaks(tmp_path) == {}


def test_names_match_as_word_parts() -> None:
    secret = ["password", "db_password", "dbPassword", "X-Api-Key", "refreshToken", "token",
              "Authorization", "HTTP_AUTHORIZATION", "auth", "cookie", "set-cookie", "cookies",
              "session", "pwd", "passwd", "secret", "client_secret", "credentials", "creds",
              "private_key", "privateKey", "access_key", "AWS_SECRET_ACCESS_KEY", "apikey",
              "api_key", "APIKey", "db_pass", "dbpassword"]
    innocuous = ["tokenizer", "author", "authority", "max_tokens", "tokens", "token_type",
                 "password_file", "num_sessions", "lr", "keys", "passenger", "pass_rate",
                 "secretary", "x"]
    assert [n for n in secret if not pcs.redaction.is_secret_name(n)] == []
    assert [n for n in innocuous if pcs.redaction.is_secret_name(n)] == []


@pytest.mark.parametrize("text", [
    BEARER, "Authorization: " + BEARER, BASIC, JWT, PEM, URL, "see " + URL + " now", AWS,
    "key=" + AWS + ";", SK, "sk-proj-" + "a" * 40, GHP, "github_pat_" + "b" * 30, SLACK,
    "AIza" + "c" * 35, "glpat-" + "d" * 20, "hf_" + "e" * 34, "sk_live_" + "f" * 24,
])
def test_value_patterns_find_credentials(text: str) -> None:
    assert pcs.redaction.secret_text(text) is not None
    assert _redaction.POLICY.scrub(text) != text


@pytest.mark.parametrize("text", [
    "adam", "resnet50_v2", "cuda:0", "task-list", "Basic understanding", "the bearer of news",
    "https://example.com/a:b@c", "https://user@host/x", "AKIAQWERTYUIOP123456X", "eyJ",
    "disk-" + "a" * 30, "/data/imagenet/train", "bert-base-uncased", "x" * 300,
])
def test_value_patterns_leave_ordinary_text(text: str) -> None:
    assert pcs.redaction.secret_text(text) is None


def test_none_empty_and_default_values_are_recorded(
    client: MlflowClient, code: CodeDir
) -> None:
    module = code.load(code.write('''
        import pcs

        @pcs.tracked
        def fetch(url: str, token: str | None = None, password: str = "",
                  session: dict | None = None) -> str:
            return f"{url}:{token}"
    '''))
    module.fetch("https://example.com")
    module.fetch("https://example.com", None, "", {})
    for run in (last(),):
        params = client.get_run(run.identifier).data.params
        assert params["arg.token"] == "None"
        assert params["arg.password"] == ""
        assert run.is_reproducible, run.not_reproducible_reasons
        assert run.run_command.argument_set.redacted == []
        new = run.rerun()
        assert new.return_value == "https://example.com:None"


def test_argument_set_identity_does_not_depend_on_the_secret() -> None:
    @pcs.tracked
    def login(user: str, password: str, headers: dict[str, str], key: str) -> None:
        return None

    ids = []
    for secret in ("first-secret-1", "second-secret-2"):
        login("ada", secret, {"Authorization": f"Bearer {secret}xxxxxxxx"},
              "AKIA" + secret.upper().replace("-", "")[:16].ljust(16, "Z"))
        ids.append(last().run_command.argument_set.identifier)
    assert ids[0] == ids[1]
    login("bob", "first-secret-1", {}, "k")
    assert last().run_command.argument_set.identifier != ids[0]


def test_redacted_argument_is_supplied_with_overrides(
    tmp_path: Path, client: MlflowClient, code: CodeDir
) -> None:
    module = code.load(code.write('''
        import pcs

        @pcs.tracked
        def connect(config: dict, retries: int) -> str:
            return config["db"]["password"][:3] + str(retries)
    '''))
    module.connect({"db": {"password": DB_PASSWORD, "host": "h"}}, 2)
    run = last()
    assert not run.is_reproducible
    with pytest.raises(pcs.ReplayError, match=r"config\['db'\]\['password'\].*overrides=") as err:
        run.rerun()
    assert DB_PASSWORD not in str(err.value)
    new = run.rerun(overrides={"config": {"db": {"password": DB_PASSWORD, "host": "h"}}})
    assert new.return_value == DB_PASSWORD[:3] + "2"
    assert client.get_run(new.identifier).data.tags["pcs.rerun_overrides"] == "config"
    assert leaks(tmp_path, [DB_PASSWORD]) == {}


def test_users_add_names_and_patterns(tmp_path: Path, client: MlflowClient) -> None:
    @pcs.tracked
    def call(pin: str, note: str) -> str:
        return note

    tracker = call.__pcs_tracked__  # type: ignore[attr-defined]
    assert tracker.fast_names == ("pin", "note")
    pcs.redaction.add_names("pin", "license_key")
    pcs.redaction.add_patterns(r"acme_[0-9a-f]{8}")
    assert tracker.fast_names is None  # a secret-named parameter: no fast path
    assert pcs.redaction.is_secret_name("userPin")
    assert pcs.redaction.is_secret_name("X-License-Key")
    assert pcs.redaction.patterns() == (r"acme_[0-9a-f]{8}",)
    call("4321", "acme_0badf00d")
    params = client.get_run(last().identifier).data.params
    assert params == {"arg.pin": "<redacted>", "arg.note": "<redacted>"}
    assert isinstance(last().load_return_value(), _canon.Redacted)
    assert leaks(tmp_path, ["acme_0badf00d"]) == {}
    with pytest.raises(pcs.UsageError, match="empty string"):
        pcs.redaction.add_patterns(r"x*")
    pcs.redaction.reset()
    assert tracker.fast_names == ("pin", "note")


def test_a_failing_check_records_the_value_redacted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(name: Any, value: Any) -> str | None:
        raise RuntimeError("boom")

    monkeypatch.setattr(_redaction.POLICY, "named", broken)

    @pcs.tracked
    def call(options: dict[str, str]) -> int:
        return 1

    call({"anything": "clear-value-123"})
    run = last()
    assert leaks(tmp_path, ["clear-value-123"]) == {}
    assert any("could not check it for secrets" in p
               for p in run.run_command.argument_set.redacted)


def test_pickled_return_value_with_a_secret_is_logged_redacted(tmp_path: Path) -> None:
    @pcs.tracked(return_format="pickle")
    def make() -> dict[str, Any]:
        return {"api_key": RETURN_KEY, "n": 1}

    @pcs.tracked(return_format="pickle")
    def clean() -> dict[str, Any]:
        return {"n": 1}

    make()
    run = last()
    assert run.return_value_artifact() == ("json", "pcs.return_value.json")
    clean()
    assert last().return_value_artifact() == ("pickle", "pcs.return_value.pickle")
    assert pickle.loads(pickle.dumps(1)) == 1
    assert leaks(tmp_path, [RETURN_KEY]) == {}
