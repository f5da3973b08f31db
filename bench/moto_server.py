"""Runs moto's ThreadedMotoServer in its own process (``python -m bench.moto_server PORT``), so the
emulator does not share the benchmark's interpreter lock."""

from __future__ import annotations

import signal
import sys
import threading

from moto.server import ThreadedMotoServer


def main() -> None:
    port = int(sys.argv[1])
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print("ready", flush=True)
    stop.wait()
    server.stop()


if __name__ == "__main__":
    main()
