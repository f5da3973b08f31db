"""Runs moto's ThreadedMotoServer in its own process (``python -m bench.moto_server PORT``), so the
emulator does not share the benchmark's interpreter lock."""

from __future__ import annotations

import argparse
import signal
import threading

from moto.server import ThreadedMotoServer


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.moto_server", description=__doc__)
    parser.add_argument("port", type=int, help="the loopback port to serve on")
    port = parser.parse_args(argv).port
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print("ready", flush=True)
    stop.wait()
    server.stop()


if __name__ == "__main__":
    main()
