"""``storage.url`` and ``storage.path``: one database, named once, never with its password."""

from __future__ import annotations

from pathlib import Path

import pytest

from meridian import config
from meridian.storage.postgres import PostgresStore
from meridian.storage.sqlite import SQLiteStore


def settings(storage: dict[str, object]) -> config.Settings:
    return config.validate({"storage": storage}, "meridian.yaml")


def test_path_is_short_for_a_sqlite_url(tmp_path: Path) -> None:
    by_path = settings({"path": str(tmp_path / "m.db")}).storage
    by_url = settings({"url": f"sqlite:///{tmp_path / 'm.db'}"}).storage
    assert by_path.path == by_url.path == tmp_path / "m.db"
    assert by_url.url is None
    assert isinstance(by_url.store(), SQLiteStore)
    # Four slashes (the other common spelling of an absolute path) name the same file.
    assert settings({"url": f"sqlite:////{tmp_path / 'm.db'}"}).storage.path == by_path.path


def test_path_and_url_together_are_refused(tmp_path: Path) -> None:
    with pytest.raises(config.ConfigError) as err:
        settings({"path": str(tmp_path / "m.db"), "url": "postgresql://u:pw@db/meridian"})
    assert "storage.path and storage.url both name the database: keep one" in str(err.value)


def test_a_postgresql_url_and_its_password_stay_out_of_messages() -> None:
    conf = settings({"url": "postgresql://meridian:s3cret-pw@db.lan/meridian"}).storage
    assert isinstance(conf.store(), PostgresStore)
    assert conf.describe() == "postgresql://***@db.lan/meridian"
    with pytest.raises(config.ConfigError) as err:
        settings({"url": "mysql://root:s3cret-pw@db.lan/meridian"})
    assert "expected sqlite:///ABSOLUTE/PATH or postgresql://" in str(err.value)
    assert "s3cret-pw" not in str(err.value)


def test_the_unix_socket_form_is_a_postgresql_url() -> None:
    conf = settings({"url": "postgresql:///meridian?host=/run/postgresql"}).storage
    assert conf.url == "postgresql:///meridian?host=/run/postgresql"
    assert isinstance(conf.store(), PostgresStore)


def test_with_postgresql_a_generated_master_key_stays_in_the_data_directory(
    tmp_path: Path,
) -> None:
    from meridian import masterkey

    conf = config.validate(
        {"storage": {"url": "postgresql://meridian@db.lan/meridian"}}, "meridian.yaml"
    )
    assert masterkey.key_file(conf) == config.data_dir() / "master_key"
