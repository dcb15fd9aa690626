"""``meridian storage copy``: a real SQLite file's keys and usage into a real PostgreSQL
database; then every report reads the same from both, and every client key still works."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from ledgerhelpers import rec

from meridian import cli
from meridian.errors import AuthenticationFailed
from meridian.keys import KeyStore
from meridian.ledger import Ledger
from meridian.model import Usage
from meridian.prices import PriceTable
from meridian.resolver import StoreKeyResolver
from meridian.storage import make_store
from pgserver import PostgresServer

HOUR = 3600.0


async def fill(url: str) -> dict[str, str]:
    """Keys (one with limits, one revoked, one rotated) and a week of usage, as a server
    and `meridian keys` would have left them."""
    store = make_store(url).open()
    try:
        keys = KeyStore(store)
        pulse, info = keys.create(
            "pulse", models=["gpt-test"], rpm=60, tpm=10_000, budget_usd_month=12.5,
            expires_at=time.time() + 90 * 86_400,
        )  # fmt: skip
        gone, _ = keys.create("gone")
        keys.revoke("gone")
        keys.create("notes")
        notes = keys.rotate("notes")
        now = time.time()
        ledger = Ledger(store, PriceTable())
        for n in range(60):
            name = ("pulse", "notes", None)[n % 3]
            ledger.record(
                rec(n, started_at=now - n * 2.5 * HOUR, key_name=name,
                    key_id=info.id if name == "pulse" else None,
                    alias=("gpt-test", "claude-test")[n % 2],
                    status=429 if n % 7 == 0 else 200, usage=Usage(100 + n, 10 * n, n % 5))
            )  # fmt: skip
        await ledger.aclose()
        return {"pulse": pulse, "gone": gone, "notes": notes}
    finally:
        store.close()


def usage(capsys: pytest.CaptureFixture[str], tmp_path: Path, url: str, by: str) -> str:
    cfg = tmp_path / f"{abs(hash(url))}.yaml"
    cfg.write_text(f"storage:\n  url: {url}\n", encoding="utf-8")
    assert cli.main(["usage", "--config", str(cfg), "--since", "30d", "--by", by, "--csv"]) == 0
    return capsys.readouterr().out


async def test_copy_sqlite_into_postgresql(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, postgres: PostgresServer
) -> None:
    source = f"sqlite:///{tmp_path / 'meridian.db'}"
    target = postgres.url(postgres.new_database())
    secrets = await fill(source)

    assert cli.main(["storage", "copy", "--from", source, "--to", target]) == 0
    out, _ = capsys.readouterr()
    assert "copied 3 keys and 60 usage rows" in out

    for by in ("key", "model", "day"):
        before, after = usage(capsys, tmp_path, source, by), usage(capsys, tmp_path, target, by)
        assert before == after
        assert len(before.splitlines()) > 2

    old, new = make_store(source).open(), make_store(target).open()
    try:
        assert KeyStore(old).list() == KeyStore(new).list()
        resolver = StoreKeyResolver(KeyStore(new))
        for name in ("pulse", "notes"):
            principal = await resolver.resolve(secrets[name])
            assert principal is not None and principal.name == name
        with pytest.raises(AuthenticationFailed, match="revoked"):
            await resolver.resolve(secrets["gone"])
        # New rows get ids above the copied ones.
        _, info = KeyStore(new).create("after-the-copy")
        assert info.id > max(k.id for k in KeyStore(old).list())
    finally:
        old.close()
        new.close()

    # Not twice: a second copy into the same database is refused, and changes nothing.
    assert cli.main(["storage", "copy", "--from", source, "--to", target]) == 2
    _, err = capsys.readouterr()
    assert "already holds 4 keys and 60 usage rows" in err
    assert "only into an empty database" in err

    # And back: PostgreSQL into a new SQLite file reads the same again.
    back = f"sqlite:///{tmp_path / 'back.db'}"
    assert cli.main(["storage", "copy", "--from", target, "--to", back]) == 0
    capsys.readouterr()
    assert usage(capsys, tmp_path, back, "model") == usage(capsys, tmp_path, target, "model")


async def test_a_failed_copy_leaves_the_target_empty(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, postgres: PostgresServer
) -> None:
    source = f"sqlite:///{tmp_path / 'meridian.db'}"
    target = postgres.url(postgres.new_database())
    await fill(source)
    # SQLite keeps what it is given: a text where PostgreSQL needs a number, at the very end.
    store = make_store(source).open()
    with store.transaction() as conn:
        conn.execute("UPDATE usage SET latency_ms = 'n/a' WHERE id = (SELECT MAX(id) FROM usage)")
    store.close()
    assert cli.main(["storage", "copy", "--from", source, "--to", target]) == 2
    _, err = capsys.readouterr()
    assert "the copy failed and nothing was written" in err and "Traceback" not in err
    copied = make_store(target).open()
    try:
        assert copied.query("SELECT COUNT(*) FROM keys")[0][0] == 0
        assert copied.query("SELECT COUNT(*) FROM usage")[0][0] == 0
    finally:
        copied.close()


async def test_a_copy_that_would_copy_nothing_by_mistake_is_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, postgres: PostgresServer
) -> None:
    real = tmp_path / "meridian.db"
    await fill(f"sqlite:///{real}")
    # A typo in the source: no empty database is made up to copy from.
    missing = tmp_path / "meridain.db"
    assert (
        cli.main(["storage", "copy", "--from", str(missing), "--to", str(tmp_path / "n.db")]) == 2
    )
    _, err = capsys.readouterr()
    assert f"{missing}: no such database file: nothing to copy from" in err
    assert not missing.exists() and not (tmp_path / "n.db").exists()
    # The same database on both sides, however it is spelled.
    for source, target in [
        (str(real), f"sqlite:///{real}"),
        (str(real), str(tmp_path / "." / "meridian.db")),
        (postgres.url("meridian_same"), postgres.url("meridian_same")),
    ]:
        assert cli.main(["storage", "copy", "--from", source, "--to", target]) == 2
        _, err = capsys.readouterr()
        assert "--from and --to both name" in err and "Traceback" not in err
