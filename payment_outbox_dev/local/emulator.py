"""The local AWS emulator: moto's server application on a port of this process, with local-only faults.

It is the WSGI application ``moto.server.ThreadedMotoServer`` serves, wrapped once:

- **faults**: while a fault is set, SNS publishes *to a topic* fail the way the relay must survive —
  ``outage`` answers the whole request HTTP 503 ``ServiceUnavailable``, as SNS does in an outage
  (botocore retries it as it would SNS's, then the relay holds the rows without charging an
  attempt), ``reject`` answers HTTP 200 with every batch entry failed (``InvalidParameter``, sender
  fault), which the relay treats as permanent. SMS (publish to a phone number) is never affected.
- **observation**: every SNS publish is reported to an observer, so the local stack can narrate it.

- **faults from outside**: ``POST /_emulator/faults {"sns": "outage" | "reject" | null}`` sets them
  on an emulator running as a process of its own (the kill chaos run: an outage outlives the stack's
  deaths and restarts).

- **SMS sent**: ``GET /_emulator/sms`` lists the text of every SMS published (what a phone would have
  received), for the kill chaos run's checks.

Nothing here exists in AWS: the faults are switched from the local stack's ``/_local/faults``.

``python -m payment_outbox_dev.local.emulator --port 0`` runs the emulator as a process of its own (the kill
chaos run keeps it apart from the stack it kills) and prints its URL once it listens.
"""

from __future__ import annotations

import io
import logging
import threading
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs
from xml.sax.saxutils import escape  # nosec B406 - escapes output; nothing is parsed

SMS_PATH = "/_emulator/sms"
FAULTS_PATH = "/_emulator/faults"
SNS_XMLNS = "http://sns.amazonaws.com/doc/2010-03-31/"
FAULT_MODES = ("outage", "reject")


@dataclass(frozen=True)
class SnsCall:
    """One SNS publish seen by the emulator."""

    action: str  # Publish or PublishBatch
    topic_arn: str | None
    phone: str | None
    #: The ``topic`` message attribute of each message (the envelope's topic), in request order.
    topics: tuple[str, ...]
    status: int = 0
    fault: str | None = None

    @property
    def topic_name(self) -> str:
        return (self.topic_arn or "").rsplit(":", 1)[-1]


@dataclass
class Faults:
    """The faults currently injected; thread-safe."""

    sns_publish: str | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def set_sns_publish(self, mode: str | None) -> None:
        if mode is not None and mode not in FAULT_MODES:
            raise ValueError(f"unknown SNS fault {mode!r}; expected one of {', '.join(FAULT_MODES)} or null")
        with self._lock:
            self.sns_publish = mode

    def snapshot(self) -> dict[str, str | None]:
        with self._lock:
            return {"sns": self.sns_publish}


StartResponse = Callable[..., Any]
Observer = Callable[[SnsCall], None]


def parse_sns_call(body: bytes) -> SnsCall | None:
    """The publish a form-encoded (query protocol) SNS request makes, or None for any other call."""
    form = {k: v[-1] for k, v in parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True).items()}
    action = form.get("Action")
    if action not in ("Publish", "PublishBatch"):
        return None
    topic_arn = form.get("TopicArn") or form.get("TargetArn")
    topics = []
    # Attributes are numbered lists: <prefix>MessageAttributes.entry.N.Name / .Value.StringValue.
    prefixes = (
        sorted(
            {k.split(".MessageAttributes.", 1)[0] for k in form if ".MessageAttributes." in k},
            key=_member_index,
        )
        if action == "PublishBatch"
        else [""]
    )
    for prefix in prefixes:
        lead = f"{prefix}.MessageAttributes.entry." if prefix else "MessageAttributes.entry."
        for key, value in form.items():
            if key.startswith(lead) and key.endswith(".Name") and value == "topic":
                topics.append(form.get(key[: -len(".Name")] + ".Value.StringValue", ""))
    return SnsCall(action, topic_arn, form.get("PhoneNumber"), tuple(topics))


def _member_index(prefix: str) -> int:
    tail = prefix.rsplit(".", 1)[-1]
    return int(tail) if tail.isdigit() else 0


def _batch_entry_ids(body: bytes) -> list[str]:
    form = parse_qs(body.decode("utf-8", "replace"))
    ids = [
        (key, values[-1])
        for key, values in form.items()
        if key.startswith("PublishBatchRequestEntries.member.") and key.endswith(".Id")
    ]
    return [entry_id for _key, entry_id in sorted(ids, key=lambda kv: _member_index(kv[0][: -len(".Id")]))]


class FaultInjectingApp:
    """WSGI middleware in front of moto: injects the SNS faults and reports each SNS publish."""

    def __init__(self, app: Callable[..., Any], faults: Faults, observer: Observer | None = None) -> None:
        self._app = app
        self._faults = faults
        self._observer = observer

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == SMS_PATH:
            return _respond_json(start_response, sent_sms())
        if environ.get("PATH_INFO") == FAULTS_PATH and environ.get("REQUEST_METHOD") == "POST":
            return self._set_faults(environ, start_response)
        if "/sns/" not in environ.get("HTTP_AUTHORIZATION", ""):
            return self._app(environ, start_response)  # type: ignore[no-any-return]
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        environ["wsgi.input"] = io.BytesIO(body)
        call = parse_sns_call(body)
        if call is None:
            return self._app(environ, start_response)  # type: ignore[no-any-return]
        fault = self._faults.snapshot()["sns"] if call.topic_arn else None
        if fault == "outage" or (fault == "reject" and call.action == "Publish"):
            outage = fault == "outage"
            refused, code, kind = (
                (503, "ServiceUnavailable", "Receiver") if outage else (400, "InvalidParameter", "Sender")
            )
            message = f"SNS {call.action} refused: local fault '{fault}' (POST /_local/faults to clear it)"
            self._report(call, refused, fault)
            return _respond(start_response, refused, _error_xml(code, message, kind))
        if fault == "reject":
            self._report(call, 200, fault)
            return _respond(start_response, 200, _rejected_batch_xml(_batch_entry_ids(body)))
        status: list[int] = []

        def recording_start_response(status_line: str, headers: Any, *rest: Any) -> Any:
            status.append(int(status_line.split(" ", 1)[0]))
            return start_response(status_line, headers, *rest)

        result: Iterable[bytes] = self._app(environ, recording_start_response)
        self._report(call, status[0] if status else 0, None)
        return result

    def _set_faults(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        import json

        length = int(environ.get("CONTENT_LENGTH") or 0)
        try:
            requested = json.loads(environ["wsgi.input"].read(length) if length else b"{}")
            if not isinstance(requested, dict):
                raise ValueError("expected a JSON object")
            if "sns" in requested:
                self._faults.set_sns_publish(requested["sns"])
        except ValueError as exc:
            return _respond(start_response, 400, _error_xml("InvalidFault", str(exc)))
        return _respond_json(start_response, self._faults.snapshot())

    def _report(self, call: SnsCall, status: int, fault: str | None) -> None:
        if self._observer is not None:
            self._observer(SnsCall(call.action, call.topic_arn, call.phone, call.topics, status, fault))


def sent_sms() -> list[str]:
    """The text of every SMS this emulator's SNS published, in order (all accounts and regions)."""
    from moto.sns.models import sns_backends

    texts: list[str] = []
    for _account, _region, backend in sns_backends.iter_backends():
        sms: dict[str, tuple[str, str]] = getattr(backend, "sms_messages", {})
        texts.extend(message for _phone, message, *_ in sms.values())
    return texts


def _respond_json(start_response: StartResponse, document: Any) -> list[bytes]:
    import json

    payload = json.dumps(document).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))])
    return [payload]


def _respond(start_response: StartResponse, status: int, body: str) -> list[bytes]:
    payload = body.encode()
    reason = {200: "OK", 503: "Service Unavailable"}.get(status, "Bad Request")
    start_response(
        f"{status} {reason}", [("Content-Type", "text/xml"), ("Content-Length", str(len(payload)))]
    )
    return [payload]


def _error_xml(code: str, message: str, kind: str = "Sender") -> str:
    return (
        f'<ErrorResponse xmlns="{SNS_XMLNS}"><Error><Type>{kind}</Type><Code>{escape(code)}</Code>'
        f"<Message>{escape(message)}</Message></Error><RequestId>{uuid.uuid4()}</RequestId></ErrorResponse>"
    )


def _rejected_batch_xml(entry_ids: list[str]) -> str:
    failed = "".join(
        f"<member><Id>{escape(entry_id)}</Id><Code>InvalidParameter</Code>"
        "<Message>rejected: local fault 'reject' (POST /_local/faults to clear it)</Message>"
        "<SenderFault>true</SenderFault></member>"
        for entry_id in entry_ids
    )
    return (
        f'<PublishBatchResponse xmlns="{SNS_XMLNS}"><PublishBatchResult><Successful/>'
        f"<Failed>{failed}</Failed></PublishBatchResult>"
        f"<ResponseMetadata><RequestId>{uuid.uuid4()}</RequestId></ResponseMetadata></PublishBatchResponse>"
    )


class EmulatorServer:
    """moto's server application, threaded, on ``host:port`` (port 0: any free port)."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 5000,
        *,
        faults: Faults | None = None,
        observer: Observer | None = None,
    ) -> None:
        self._host = host
        self._port = port
        self.faults = faults or Faults()
        self._observer = observer
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        from moto.moto_server.werkzeug_app import (
            DomainDispatcherApplication,
            MotoRequestHandler,
            create_backend_app,
        )
        from werkzeug.serving import make_server

        # werkzeug logs every request at INFO; the stack narrates what matters instead.
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        app = FaultInjectingApp(DomainDispatcherApplication(create_backend_app), self.faults, self._observer)
        self._server = make_server(
            self._host, self._port, app, threaded=True, request_handler=MotoRequestHandler
        )
        self._thread = threading.Thread(target=self._server.serve_forever, name="emulator", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("start() first")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._server = self._thread = None


def main(argv: list[str] | None = None) -> int:
    """The emulator alone, until SIGTERM or SIGINT: prints ``emulator <url>`` once it listens."""
    import argparse
    import signal

    parser = argparse.ArgumentParser(
        prog="python -m payment_outbox_dev.local.emulator",
        description="The local AWS emulator (moto) as a process of its own.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="the address to serve on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="0: any free port (printed)")
    args = parser.parse_args(argv)
    stopped = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopped.set())
    server = EmulatorServer(args.host, args.port)
    server.start()
    print(f"emulator {server.url}", flush=True)
    while not stopped.wait(0.5):
        pass
    server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
