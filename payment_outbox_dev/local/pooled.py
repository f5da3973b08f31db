"""The functions as the local stack runs them: the harness's API Gateway and SQS plumbing with every
invocation run by the function's worker pool (the supervisor itself never imports a handler), and the
API as the HTTP front serves it — each request the proxy event of its route's function, and API
Gateway's own 502 when the function dies or raises instead of answering.
"""

from __future__ import annotations

import base64
import threading
import traceback
from pathlib import Path
from typing import Any

from payment_outbox_dev.local.auth import LocalAuthorizer, Principal, Refusal
from payment_outbox_dev.local.describe import describe
from payment_outbox_dev.local.harness import LocalFunctions
from payment_outbox_dev.local.http_front import Answer, Request
from payment_outbox_dev.local.observe import Narrator, why
from payment_outbox_dev.local.workers import FunctionPool, InvocationFailed, Outcome, WorkerDied

#: API Gateway's answer when the function's container dies or raises without answering.
INTERNAL_ERROR = Answer.json(502, {"message": "Internal server error"})


class PooledFunctions(LocalFunctions):
    def __init__(self, root: Path, template: dict[str, Any], pools: dict[str, FunctionPool]) -> None:
        super().__init__(root, template)
        self.pools = pools
        self._last = threading.local()

    def invoke(self, logical_id: str, event: dict[str, Any]) -> Any:
        self._last.outcome = None
        outcome = self.pools[logical_id].invoke(event)
        self._last.outcome = outcome
        return outcome.result

    def last_outcome(self) -> Outcome | None:
        """This thread's last invocation that answered (None if it raised or its worker died)."""
        outcome: Outcome | None = getattr(self._last, "outcome", None)
        return outcome


class PooledApi:
    """The HTTP front's API handler: a request in, the route's function's answer out."""

    def __init__(
        self,
        functions: LocalFunctions,
        narrator: Narrator,
        *,
        verbose: bool = False,
        authorizer: LocalAuthorizer | None = None,
    ) -> None:
        self._functions = functions
        self._narrator = narrator
        self._verbose = verbose
        self._authorizer = authorizer

    def __call__(self, request: Request) -> Answer:
        where = f"{request.method} {request.path}"
        principal = self._authorize(request)
        if isinstance(principal, Refusal):
            self._narrator.say("auth", f"{where}: refused {principal.status}: {principal.message}")
            return Answer(principal.status, [("Content-Type", "application/json")], principal.body())
        text = request.body.decode("utf-8", "replace") if request.body else None
        try:
            result = self._functions.api_result(
                request.method,
                request.path,
                text,
                dict(request.headers),
                query=request.query or None,
                default_content_type=False,
                authorizer=None if principal is None else principal.authorizer,
                identity=None if principal is None else principal.identity,
            )
        except WorkerDied as exc:
            self._narrator.say("error", f"{where}: {exc}; answered 502")
            return INTERNAL_ERROR
        except InvocationFailed as exc:
            self._narrator.say("error", f"{where}: the function raised {why(exc)}; answered 502")
            if self._verbose:
                self._narrator.raw(exc.trace)
            return INTERNAL_ERROR
        except Exception as exc:
            self._narrator.say("error", f"{where}: {describe(exc)}; answered 502")
            if self._verbose:
                self._narrator.raw(traceback.format_exc())
            return INTERNAL_ERROR
        headers = [(k, str(v)) for k, v in (result.get("headers") or {}).items()]
        for name, values in (result.get("multiValueHeaders") or {}).items():
            headers.extend((name, str(v)) for v in values)
        raw = result.get("body") or ""
        payload = base64.b64decode(raw) if result.get("isBase64Encoded") else str(raw).encode()
        return Answer(int(result.get("statusCode", 502)), headers, payload)

    def _authorize(self, request: Request) -> Principal | Refusal | None:
        """What the route's authorizer decides, before its function runs (None: no authorizer here,
        or no route, which the harness answers 404/405 as API Gateway does)."""
        matched = self._functions.match_route(request.method, request.path)
        if self._authorizer is None or matched is None:
            return None
        host = next((v for k, v in request.headers.items() if k.lower() == "host"), "")
        url = f"http://{host}{request.raw_target or request.path}"
        return self._authorizer.verify(matched[0], request.method, url, request.headers, request.body)
