"""The local stack's authorizers, enforced as API Gateway enforces them before any function runs.

- ``iam`` routes (the admin routes; the order routes with ``CallerIdentity=iam``): a request signed with
  SigV4 (service ``execute-api``) by the local credentials, verified by recomputing the signature with
  botocore over the request as received. No or bad credentials: 403 and API Gateway's message.
- ``cognito`` routes (the order routes with ``CallerIdentity=cognito``): an ``Authorization`` header
  holding an ID token signed by the local key (RS256), which the stack publishes as a JWKS at
  ``/_local/jwks.json``; ``payment-outbox token --user U`` prints one. No or bad token: 401. The
  function then finds the token's claims in ``requestContext.authorizer.claims``, as in AWS.
- open routes (the payment callback, authenticated by its own signature): passed through.

The credentials and the key are made on the first start and kept in the stack's data folder
(``local-auth.json``, readable by its owner only), so tokens and signing keep working across restarts.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeyParameters, KeySet, RSAKey

from payment_outbox_dev.checks.template import Route
from payment_outbox_dev.local.harness import ACCOUNT, REGION

AUTH_FILE = "local-auth.json"
JWKS_PATH = "/_local/jwks.json"
SERVICE = "execute-api"
#: The issuer of local tokens (a Cognito pool's is https://cognito-idp.<region>.amazonaws.com/<pool>).
ISSUER = "payment-outbox-local"
CLIENT_ID = "payment-outbox-local-client"
KEY_ID = "payment-outbox-local-1"
#: API Gateway refuses a SigV4 request whose X-Amz-Date is further than this from its clock.
MAX_SIGNATURE_SKEW_SECONDS = 15 * 60
DEFAULT_TOKEN_SECONDS = 3600
#: The local caller SigV4 requests are made as (API Gateway's requestContext.identity).
CALLER_ARN = f"arn:aws:iam::{ACCOUNT}:user/payment-outbox-local"

Mode = Literal["iam", "cognito", "open"]

_AUTHORIZATION = re.compile(
    r"^AWS4-HMAC-SHA256 Credential=(?P<key>[^/\s,]+)/(?P<date>[0-9]{8})/(?P<region>[^/\s,]+)/"
    r"(?P<service>[^/\s,]+)/aws4_request,\s*SignedHeaders=(?P<headers>[a-z0-9;_.-]+),\s*"
    r"Signature=(?P<signature>[0-9a-f]{64})$"
)

MISSING_TOKEN = "Missing Authentication Token"  # noqa: S105 - API Gateway's message, no secret  # nosec B105
BAD_SIGNATURE = (
    "The request signature we calculated does not match the signature you provided. Check your AWS "
    "Secret Access Key and signing method. Consult the service documentation for details."
)
UNKNOWN_KEY = "The security token included in the request is invalid."
UNAUTHORIZED = "Unauthorized"
EXPIRED_TOKEN = "The incoming token has expired"  # noqa: S105 - API Gateway's message, no secret  # nosec B105
MALFORMED = "Authorization header requires 'Credential', 'SignedHeaders' and 'Signature'."
NO_DATE = "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header."
WRONG_SCOPE_DATE = "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date."
KEY_PARAMETERS: KeyParameters = {"kid": KEY_ID, "use": "sig", "alg": "RS256"}


@dataclass(frozen=True)
class Principal:
    """Who the authorizer let through, as it goes into the function's ``requestContext``."""

    mode: Mode
    name: str | None = None
    #: ``requestContext.authorizer`` (cognito: the token's claims, as strings).
    authorizer: dict[str, Any] | None = None
    #: Added to ``requestContext.identity`` (iam: the caller's key and ARN).
    identity: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Refusal:
    """API Gateway's own answer: the status and ``{"message": ...}``; the function never runs."""

    status: int
    message: str

    def body(self) -> bytes:
        return json.dumps({"message": self.message}).encode()


@dataclass(frozen=True)
class LocalCredentials:
    access_key_id: str
    secret_access_key: str
    signing_key: RSAKey

    @classmethod
    def load_or_create(cls, data_dir: Path) -> LocalCredentials:
        """The stack's credentials and key, made once per data folder and kept (owner-only)."""
        path = data_dir / AUTH_FILE
        if not path.exists():
            made = {
                "accessKeyId": "AKLOCAL" + secrets.token_hex(7).upper(),
                "secretAccessKey": secrets.token_urlsafe(30),
                "signingKey": RSAKey.generate_key(2048, parameters=KEY_PARAMETERS, private=True)
                .as_pem(private=True)
                .decode(),
            }
            data_dir.mkdir(parents=True, exist_ok=True)
            # Written whole under another name, then linked into place: a reader never sees half a
            # file, and when two processes race the first link wins and both read the same one.
            draft = data_dir / f".{AUTH_FILE}.{os.getpid()}.{secrets.token_hex(4)}"
            descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "w") as out:
                json.dump(made, out)
            try:
                os.link(draft, path)
            except FileExistsError:
                pass
            finally:
                draft.unlink()
        stored = json.loads(path.read_text())
        return cls(
            stored["accessKeyId"],
            stored["secretAccessKey"],
            RSAKey.import_key(stored["signingKey"], parameters=KEY_PARAMETERS),
        )

    def jwks(self) -> dict[str, Any]:
        """The public half of the signing key, as a user pool publishes its keys."""
        return {"keys": [self.signing_key.as_dict(private=False)]}

    def token(self, user: str, *, seconds: int = DEFAULT_TOKEN_SECONDS, now: float | None = None) -> str:
        """An ID token for ``user`` (its subject), shaped as a user pool's."""
        issued = int(time.time() if now is None else now)
        claims = {
            "sub": user,
            # Where a user pool the stack creates keeps the order user id (CognitoUserIdClaim's default).
            "custom:user_id": user,
            "cognito:username": user,
            "iss": ISSUER,
            "aud": CLIENT_ID,
            "token_use": "id",  # nosec B105 - the token kind Cognito names, no secret
            "auth_time": issued,
            "iat": issued,
            "exp": issued + seconds,
        }
        return jwt.encode({"alg": "RS256", "kid": KEY_ID}, claims, self.signing_key)

    def sign(
        self, method: str, url: str, body: bytes = b"", headers: Mapping[str, str] | None = None
    ) -> dict[str, str]:
        """The request's headers with what a SigV4 client adds (Host, X-Amz-Date, Authorization)."""
        request = AWSRequest(method=method, url=url, data=body, headers=dict(headers or {}))
        request.headers["Host"] = urlsplit(url).netloc
        SigV4Auth(Credentials(self.access_key_id, self.secret_access_key), SERVICE, REGION).add_auth(request)
        return {name: str(value) for name, value in request.headers.items()}


class LocalAuthorizer:
    """Decides, for each API request, what API Gateway's authorizer would: a ``Principal`` to pass to
    the function, or a ``Refusal`` answered in its place."""

    def __init__(self, credentials: LocalCredentials, caller_identity: Literal["iam", "cognito"]) -> None:
        self._credentials = credentials
        self._caller_identity = caller_identity
        self._keys = KeySet([credentials.signing_key])

    def mode_of(self, route: Route) -> Mode:
        """A route without an authorizer in the template is open; the order routes (the payment API's
        authorised routes) take ``CallerIdentity``; every other authorised route (admin) takes IAM."""
        if not route.authorized:
            return "open"
        return self._caller_identity if route.function == "PaymentApiFunction" else "iam"

    def verify(
        self,
        route: Route,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes,
        *,
        now: float | None = None,
    ) -> Principal | Refusal:
        mode = self.mode_of(route)
        if mode == "open":
            return Principal("open")
        lowered = {name.lower(): value for name, value in headers.items()}
        moment = time.time() if now is None else now
        if mode == "cognito":
            return self._verify_token(lowered.get("authorization"), moment)
        return self._verify_sigv4(method, url, lowered, body, moment)

    # --- cognito ----------------------------------------------------------------------------------

    def _verify_token(self, header: str | None, now: float) -> Principal | Refusal:
        if not header:
            return Refusal(401, UNAUTHORIZED)
        token = header[len("Bearer ") :] if header.startswith("Bearer ") else header
        try:
            decoded = jwt.decode(token, self._keys, algorithms=["RS256"])
        except (JoseError, ValueError):
            return Refusal(401, UNAUTHORIZED)
        claims = decoded.claims
        if claims.get("iss") != ISSUER or claims.get("token_use") != "id" or claims.get("aud") != CLIENT_ID:
            return Refusal(401, UNAUTHORIZED)
        expires = claims.get("exp")
        if not isinstance(expires, int) or expires <= now:
            return Refusal(401, EXPIRED_TOKEN)
        if not isinstance(claims.get("sub"), str):
            return Refusal(401, UNAUTHORIZED)
        # API Gateway hands the function every claim as a string.
        as_strings = {name: value if isinstance(value, str) else str(value) for name, value in claims.items()}
        return Principal("cognito", claims["sub"], authorizer={"claims": as_strings})

    # --- iam --------------------------------------------------------------------------------------

    def _verify_sigv4(
        self, method: str, url: str, headers: dict[str, str], body: bytes, now: float
    ) -> Principal | Refusal:
        authorization = headers.get("authorization")
        if not authorization:
            return Refusal(403, MISSING_TOKEN)
        parsed = _AUTHORIZATION.match(authorization.strip())
        if parsed is None:
            return Refusal(
                403, "Authorization header requires 'Credential', 'SignedHeaders' and 'Signature'."
            )
        if parsed["key"] != self._credentials.access_key_id:
            return Refusal(403, UNKNOWN_KEY)
        if (parsed["region"], parsed["service"]) != (REGION, SERVICE):
            return Refusal(403, f"Credential should be scoped to a valid region and service {SERVICE}.")
        amz_date = headers.get("x-amz-date", "")
        try:
            signed_at = datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        except ValueError:
            return Refusal(
                403, "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header."
            )
        if not amz_date.startswith(parsed["date"]):
            return Refusal(
                403, "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date."
            )
        if abs(now - signed_at.timestamp()) > MAX_SIGNATURE_SKEW_SECONDS:
            return Refusal(403, f"Signature expired: {amz_date} is now earlier or later than allowed.")
        signed = parsed["headers"].split(";")
        if "host" not in signed or any(name not in headers for name in signed):
            return Refusal(403, BAD_SIGNATURE)
        if "x-amz-security-token" in headers:
            return Refusal(403, UNKNOWN_KEY)  # the local credentials have no session token
        expected = self._signature(method, url, {name: headers[name] for name in signed}, body, amz_date)
        if not secrets.compare_digest(expected, parsed["signature"]):
            return Refusal(403, BAD_SIGNATURE)
        identity = {"accessKey": self._credentials.access_key_id, "caller": CALLER_ARN, "userArn": CALLER_ARN}
        return Principal("iam", CALLER_ARN, identity=identity)

    def _signature(self, method: str, url: str, headers: dict[str, str], body: bytes, amz_date: str) -> str:
        """The signature botocore computes over exactly the headers the client signed."""
        request = AWSRequest(method=method, url=url, data=body, headers=headers)
        request.context["timestamp"] = amz_date
        auth = SigV4Auth(
            Credentials(self._credentials.access_key_id, self._credentials.secret_access_key), SERVICE, REGION
        )
        canonical = auth.canonical_request(request)
        return str(auth.signature(auth.string_to_sign(request, canonical), request))
