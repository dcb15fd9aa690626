"""SIGTERM with requests in flight: they finish, and every one of them is in the ledger."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import anthropic
import openai
from ledgerhelpers import MASTER_KEY, upstreams

from fakes import FakeAnthropic, FakeOpenAI
from meridian.storage import make_store

SCRIPT = Path(__file__).with_name("serve_wired.py")
N = 6


def test_sigterm_flushes_the_ledger(
    fake_openai: FakeOpenAI, fake_anthropic: FakeAnthropic, tmp_path: Path
) -> None:
    raw = upstreams(fake_openai.url, fake_anthropic.url)
    db = tmp_path / "meridian.db"
    conf = tmp_path / "meridian.yaml"
    conf.write_text(
        "server:\n"
        f"  master_key: {MASTER_KEY}\n"
        f"storage:\n  path: {db}\n"
        "providers:\n"
        + "".join(
            f"  {name}:\n" + "".join(f"    {k}: {v}\n" for k, v in p.items())
            for name, p in raw["providers"].items()
        )
        + "models:\n"
        + "".join(
            f"  {alias}: {{provider: {d['provider']}, model: {d['model']}}}\n"
            for alias, d in raw["models"].items()
        ),
        encoding="utf-8",
    )
    # Slow answers: the requests are still in flight when the signal arrives.
    for _ in range(N // 2):
        fake_openai.reply(headers_delay_s=1.5)
        fake_anthropic.reply(headers_delay_s=1.5)
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPT), str(conf)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("listening "), proc.stderr.read() if proc.stderr else line
        url = f"http://127.0.0.1:{line.split()[1]}"
        errors: list[BaseException] = []

        def call(i: int) -> None:
            try:
                msg = [{"role": "user", "content": f"question {i}"}]
                if i % 2:
                    with openai.OpenAI(base_url=url + "/v1", api_key=MASTER_KEY,
                                       max_retries=0, timeout=30) as c:  # fmt: skip
                        c.chat.completions.create(model="gpt-test", messages=msg)  # type: ignore[arg-type]
                else:
                    with anthropic.Anthropic(base_url=url, api_key=MASTER_KEY,
                                             max_retries=0, timeout=30) as c:  # fmt: skip
                        c.messages.create(model="claude-test", max_tokens=50, messages=msg)  # type: ignore[arg-type]
            except BaseException as exc:
                errors.append(exc)

        # Wait until the gateway is up (it printed its port before serving).
        for _ in range(200):
            try:
                with openai.OpenAI(base_url=url + "/v1", api_key=MASTER_KEY, max_retries=0) as c:
                    c.models.list()
                break
            except openai.APIConnectionError:
                time.sleep(0.05)
        threads = [threading.Thread(target=call, args=(i,)) for i in range(N)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 15
        while len(fake_openai.requests) + len(fake_anthropic.requests) < N:
            assert time.monotonic() < deadline, "the requests never reached the upstreams"
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        for t in threads:
            t.join(30)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert errors == []
    replies = [r.reply for r in fake_openai.requests + fake_anthropic.requests if r.reply]
    store = make_store(str(db)).open()
    try:
        count, inp, out = store.query(
            "SELECT COUNT(*), SUM(input_tokens), SUM(output_tokens) FROM usage"
        )[0]
    finally:
        store.close()
    assert count == N
    assert inp == sum(r.input_tokens or 0 for r in replies)
    assert out == sum(r.output_tokens or 0 for r in replies)
