"""``store:`` and ``store_password_file`` in the configuration (docs/store.md).

A password never sits in the URL: the configuration refuses one there without
quoting it, and every printed form of the URL has it removed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from listener.config import load_config
from listener.errors import ConfigError
from listener.store import StoreLocation, store_description
from listener.store.pgurl import display_url, is_postgresql_url, url_has_password


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "overread.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_sqlite_is_the_default_and_a_postgresql_url_is_kept(tmp_path: Path) -> None:
    """No ``store:`` (or ``sqlite``): the file in state_dir; a URL and a password file are read as given."""
    assert load_config(_config(tmp_path, "state_dir: var\n")).store_url == ""
    assert load_config(_config(tmp_path, "store: sqlite\n")).store_url == ""
    (tmp_path / "pw").write_text("s3cret\n", encoding="utf-8")
    config = load_config(
        _config(
            tmp_path, "store: postgresql://overread@db.example.org:5433/ov?sslmode=require\nstore_password_file: pw\n"
        )
    )
    assert config.store_url == "postgresql://overread@db.example.org:5433/ov?sslmode=require"
    assert config.store_password_file == tmp_path / "pw"
    assert store_description(config) == config.store_url
    assert store_description(tmp_path) == str(tmp_path / "overread.db")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("store: postgresql://overread:hunter22@db/ov\n", "holds a password"),
        ("store: postgres://overread@db/ov?password=hunter22\n", "holds a password"),
        ("store: mysql://overread@db/ov\n", r"sqlite \(the default\) or a postgresql://"),
        ("store_password_file: pw\n", "only for a postgresql:// store"),
        ("store: postgresql://overread@db/ov\nstore_password_file: missing\n", "store_password_file: file not found"),
    ],
)
def test_a_bad_store_setting_is_refused_without_quoting_a_password(tmp_path: Path, text: str, problem: str) -> None:
    """Each refusal names the key and the problem, never the password's text."""
    (tmp_path / "pw").write_text("s3cret\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=problem) as refused:
        load_config(_config(tmp_path, text))
    assert "hunter22" not in str(refused.value)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://u:pw@h:5432/db?sslmode=require", "postgresql://u@h:5432/db?sslmode=require"),
        ("postgresql://u@h/db?password=pw&sslmode=require", "postgresql://u@h/db?sslmode=require"),
        ("postgresql://u@h/db?host=/run/pg", "postgresql://u@h/db?host=/run/pg"),
        ("host=/run/pg password='p w' user=u", "host=/run/pg user=u"),
        ("host=h password=pw dbname=d", "host=h dbname=d"),
    ],
)
def test_a_printed_url_has_no_password(url: str, shown: str) -> None:
    """display_url drops the user part's password and a password parameter, in URL and key=value forms."""
    assert display_url(url) == shown
    assert store_description(StoreLocation(Path("var"), url=url)) == shown


def test_which_urls_name_postgresql_and_carry_a_password() -> None:
    """Both schemes name the backend; a user without a password is not a password."""
    assert is_postgresql_url("postgresql://h/db") and is_postgresql_url("postgres://h/db")
    assert not is_postgresql_url("sqlite") and not is_postgresql_url("")
    assert url_has_password("postgresql://u:p@h/db") and not url_has_password("postgresql://u@h/db")
