"""Run the wired gateway (`ledgerhelpers.wire`) as a real process: ``serve_wired.py CONFIG``.

Prints ``listening PORT`` once up; uvicorn handles SIGTERM (graceful: in-flight requests
finish, then the lifespan flushes the ledger). Used by test_ledger_sigterm.py.
"""

from __future__ import annotations

import asyncio
import socket
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import uvicorn
from ledgerhelpers import wire

from meridian import config


def main() -> None:
    wired = wire(config.load(sys.argv[1]))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    server = uvicorn.Server(
        uvicorn.Config(wired.app, loop="asyncio", lifespan="on", access_log=False,
                       log_config=None, timeout_graceful_shutdown=20)
    )  # fmt: skip
    print(f"listening {sock.getsockname()[1]}", flush=True)
    asyncio.run(server.serve(sockets=[sock]))


if __name__ == "__main__":
    main()
