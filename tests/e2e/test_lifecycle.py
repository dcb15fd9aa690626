"""The process under signals and bad disks: SIGTERM past the grace period, SIGHUP under load,
`meridian reload`, and databases it cannot use. Real processes, real signals."""

from __future__ import annotations

import signal
import socket
import sqlite3
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
from served import KEY, MERIDIAN, Served, env, free_port, write_config

from fakes import FakeAnthropic


def test_sigterm_past_the_grace_period_ends_streams_with_an_error_event(
    tmp_path: Path, fake_anthropic: FakeAnthropic
) -> None:
    port = free_port()
    config = tmp_path / "meridian.yaml"
    write_config(
        config, port, fake_anthropic.url,
        {"m": {"provider": "ant", "model": "claude-haiku-4-5"}}, shutdown_grace_s=1,
    )  # fmt: skip
    fake_anthropic.reply_slow(0.2, text="tick " * 100, piece_size=5)  # ~20 s: past the grace
    fake_anthropic.reply_text("late", headers_delay_s=20)  # a plain call, not answered yet
    served = Served(config, port)
    got: dict[str, Any] = {}

    def stream() -> None:
        with served.client().messages.stream(
            model="m", max_tokens=500, messages=[{"role": "user", "content": "x"}]
        ) as s:
            try:
                for text in s.text_stream:
                    got["text"] = got.get("text", "") + text
                    if len(got["text"]) > 20 and "signalled" not in got:
                        got["signalled"] = True
                        served.proc.send_signal(signal.SIGTERM)
            except anthropic.APIStatusError as err:
                got["error"] = err

    def plain() -> None:
        try:
            served.client().messages.create(
                model="m", max_tokens=5, messages=[{"role": "user", "content": "x"}]
            )
        except anthropic.APIStatusError as err:
            got["plain"] = err

    threads = [threading.Thread(target=stream), threading.Thread(target=plain)]
    threads[0].start()
    while not fake_anthropic.requests:  # the stream takes the first reply, the plain call the next
        time.sleep(0.01)
    threads[1].start()
    for t in threads:
        t.join(60)
    code = served.stop()
    assert code == 0
    assert got["text"].startswith("tick")
    error = got["error"]
    assert error.body["error"]["type"] == "overloaded_error"
    assert "shutting down" in error.body["error"]["message"]
    assert got["plain"].status_code == 529
    assert "Traceback" not in served.stdout + served.stderr
    assert not [r for r in served.logs() if r["level"] == "error" and "exc" in r]
    rows = (
        sqlite3.connect(tmp_path / "meridian.db")
        .execute("SELECT status, error_type, stream FROM usage ORDER BY id")
        .fetchall()
    )
    assert sorted(rows) == [(529, "overloaded", 0), (529, "overloaded", 1)]


def test_sighup_reloads_under_load_and_an_invalid_file_changes_nothing(
    tmp_path: Path, fake_anthropic: FakeAnthropic
) -> None:
    port = free_port()
    config = tmp_path / "meridian.yaml"
    old = {"old-alias": {"provider": "ant", "model": "claude-haiku-4-5"}}
    write_config(config, port, fake_anthropic.url, old)
    served = Served(config, port)
    try:
        fake_anthropic.reply_slow(0.05, text="across the reload " * 6, piece_size=3)
        result: dict[str, Any] = {}

        def long_stream() -> None:
            with served.client().messages.stream(
                model="old-alias", max_tokens=500, messages=[{"role": "user", "content": "x"}]
            ) as s:
                result["text"] = s.get_final_text()

        t = threading.Thread(target=long_stream)
        t.start()
        while not fake_anthropic.requests:
            time.sleep(0.01)
        new = {**old, "new-alias": {"provider": "ant", "model": "claude-sonnet-4-6"}}
        write_config(config, port, fake_anthropic.url, new)
        served.proc.send_signal(signal.SIGHUP)
        t.join(30)
        assert result["text"] == "across the reload " * 6  # finished on the old generation
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                answer = served.client().messages.create(
                    model="new-alias", max_tokens=5, messages=[{"role": "user", "content": "x"}]
                )
                break
            except anthropic.NotFoundError:
                time.sleep(0.1)
        assert answer.content
        assert fake_anthropic.last.json["model"] == "claude-sonnet-4-6"
        # An invalid file: logged, and the running configuration stays.
        config.write_text(config.read_text().replace("claude-sonnet-4-6", "[unclosed"))
        served.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and "reload failed" not in served.stdout:
            time.sleep(0.05)
        failed = [r for r in served.logs() if r["msg"].startswith("reload failed")]
        assert failed and "not valid YAML" in failed[0]["msg"]
        served.client().messages.create(
            model="new-alias", max_tokens=5, messages=[{"role": "user", "content": "x"}]
        )
    finally:
        assert served.stop() == 0


def test_meridian_reload_validates_then_asks_the_gateway(
    tmp_path: Path, fake_anthropic: FakeAnthropic
) -> None:
    port = free_port()
    config = tmp_path / "meridian.yaml"
    write_config(config, port, fake_anthropic.url, {"a": {"provider": "ant", "model": "m1"}})
    served = Served(config, port)
    try:
        write_config(
            config, port, fake_anthropic.url,
            {"a": {"provider": "ant", "model": "m1"}, "b": {"provider": "nope", "model": "m2"}},
        )  # fmt: skip
        bad = subprocess.run(
            [*MERIDIAN, "reload", "--config", str(config)],
            capture_output=True, text=True, env=env(), timeout=60, check=False,
        )  # fmt: skip
        assert bad.returncode == 2 and "no provider named 'nope'" in bad.stderr
        write_config(
            config, port, fake_anthropic.url,
            {"a": {"provider": "ant", "model": "m1"}, "b": {"provider": "ant", "model": "m2"}},
            max_body_mb=1,
        )  # fmt: skip
        good = subprocess.run(
            [*MERIDIAN, "reload", "--config", str(config)],
            capture_output=True, text=True, env=env(), timeout=60, check=False,
        )  # fmt: skip
        assert good.returncode == 0, good.stderr
        assert "generation 2, 2 models" in good.stdout
        oai = openai.OpenAI(base_url=served.url + "/v1", api_key=KEY, max_retries=0)
        assert [m.id for m in oai.models.list()] == ["a", "b"]
        with pytest.raises(openai.APIStatusError) as info:  # the new body limit applies
            oai.chat.completions.create(
                model="b", messages=[{"role": "user", "content": "x" * 2_000_000}]
            )
        assert info.value.status_code == 413
    finally:
        assert served.stop() == 0


@pytest.mark.parametrize(
    ("damage", "words"),
    [
        ("garbage", "not a usable meridian database (file is not a database)"),
        ("truncated", "not a usable meridian database (database disk image is malformed)"),
        ("newer", "written by a newer meridian (schema version 99"),
        ("directory", "is a directory; storage.path must name a file"),
    ],
)
def test_a_database_it_cannot_use_is_one_line_and_exit_2(
    tmp_path: Path, fake_anthropic: FakeAnthropic, damage: str, words: str
) -> None:
    port = free_port()
    config = tmp_path / "meridian.yaml"
    write_config(config, port, fake_anthropic.url, {})
    db = tmp_path / "meridian.db"
    if damage == "garbage":
        db.write_bytes(b"this is not sqlite" * 100)
    elif damage == "directory":
        db.mkdir()
    else:
        conn = sqlite3.connect(db)
        conn.execute("CREATE TABLE t (x)")
        conn.executemany("INSERT INTO t VALUES (?)", [("x" * 200,)] * 5000)
        conn.execute(f"PRAGMA user_version={99 if damage == 'newer' else 0}")
        conn.commit()
        conn.close()
        if damage == "truncated":
            size = db.stat().st_size
            with db.open("r+b") as fh:
                fh.truncate(size // 2)
    out = subprocess.run(
        [*MERIDIAN, "serve", "--config", str(config)],
        capture_output=True, text=True, env=env(), timeout=60, check=False,
    )  # fmt: skip
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and str(db) in lines[0] and words in lines[0]
    assert "meridian started" not in out.stdout and "Traceback" not in out.stderr + out.stdout
    with socket.socket() as s:  # nothing ever listened
        assert s.connect_ex(("127.0.0.1", port)) != 0
