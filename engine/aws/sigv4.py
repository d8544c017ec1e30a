"""AWS Signature Version 4, checked on the server side against the API token.

botocore's signer (``botocore.auth.SigV4Auth``) is the reference: a client signs with access key
id ``sluice`` and the token (``SLUICE_API_TOKEN``) as its secret key, so every AWS SDK and the AWS
CLI authenticate with their own configuration (``AWS_ACCESS_KEY_ID=sluice``,
``AWS_SECRET_ACCESS_KEY=$SLUICE_API_TOKEN``). The rule is the rest of the API's: with no token
configured, a caller on loopback is let in and its signature is not checked (so any key works
there, as with LocalStack); off loopback a token is required. Everything here is pure.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote, unquote

ALGORITHM = "AWS4-HMAC-SHA256"
ACCESS_KEY = "sluice"
#: AWS refuses requests signed more than 5 minutes away from its clock; so do we
MAX_SKEW_S = 300.0
_FIELD = re.compile(r"(Credential|SignedHeaders|Signature)=([^,\s]+)")
_SPACES = re.compile(r"\s+")


class SignatureError(Exception):
    """The request is not signed as AWS signs; ``code`` is the error code AWS gives."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


@dataclass(frozen=True, slots=True)
class Signed:
    """The parts of an ``Authorization: AWS4-HMAC-SHA256 ...`` header."""

    access_key: str
    date: str
    region: str
    service: str
    signed_headers: tuple[str, ...]
    signature: str


def parse_authorization(header: str) -> Signed:
    if not header.startswith(ALGORITHM + " "):
        raise SignatureError(
            "IncompleteSignatureException",
            f"the Authorization header must start with {ALGORITHM} (sign with SigV4)",
        )
    fields = dict(_FIELD.findall(header))
    missing = [f for f in ("Credential", "SignedHeaders", "Signature") if f not in fields]
    if missing:
        raise SignatureError("IncompleteSignatureException", f"the Authorization header lacks {missing[0]}=")
    scope = fields["Credential"].split("/")
    if len(scope) != 5 or scope[4] != "aws4_request":
        raise SignatureError(
            "IncompleteSignatureException",
            "Credential must be KEY/yyyymmdd/region/service/aws4_request",
        )
    return Signed(
        scope[0], scope[1], scope[2], scope[3], tuple(fields["SignedHeaders"].split(";")), fields["Signature"]
    )


def _canonical_query(query: str) -> str:
    pairs = []
    for part in query.split("&") if query else []:
        key, _, value = part.partition("=")
        pairs.append((quote(unquote(key), safe="-_.~"), quote(unquote(value), safe="-_.~")))
    return "&".join(f"{k}={v}" for k, v in sorted(pairs))


def canonical_request(
    method: str, path: str, query: str, headers: Mapping[str, str], signed: tuple[str, ...], body: bytes
) -> str:
    lowered = {k.lower(): v for k, v in headers.items()}
    lines = [f"{name}:{_SPACES.sub(' ', lowered.get(name, '').strip())}" for name in signed]
    payload = lowered.get("x-amz-content-sha256") or hashlib.sha256(body).hexdigest()
    uri = quote(path or "/", safe="/~")
    return "\n".join(
        [method, uri, _canonical_query(query), "\n".join(lines) + "\n", ";".join(signed), payload]
    )


def signature(secret: str, signed: Signed, amz_date: str, request: str) -> str:
    scope = f"{signed.date}/{signed.region}/{signed.service}/aws4_request"
    to_sign = "\n".join([ALGORITHM, amz_date, scope, hashlib.sha256(request.encode()).hexdigest()])
    key = ("AWS4" + secret).encode()
    for part in (signed.date, signed.region, signed.service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()


def verify(
    secret: str,
    method: str,
    path: str,
    query: str,
    headers: Mapping[str, str],
    body: bytes,
    now: float,
) -> None:
    """Raise :class:`SignatureError` unless the request is signed with ``secret`` by key ``sluice``."""
    header = headers.get("Authorization") or headers.get("authorization")
    if not header:
        raise SignatureError(
            "MissingAuthenticationTokenException",
            f"sign the request with SigV4: access key id {ACCESS_KEY!r}, the API token as the secret key",
        )
    signed = parse_authorization(header)
    if signed.access_key != ACCESS_KEY:
        raise SignatureError(
            "UnrecognizedClientException",
            f"unknown access key id; use {ACCESS_KEY!r} with the API token as the secret key",
        )
    amz_date = headers.get("X-Amz-Date") or headers.get("x-amz-date") or ""
    try:
        at = datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC).timestamp()
    except ValueError:
        raise SignatureError("IncompleteSignatureException", "X-Amz-Date must be yyyymmddThhmmssZ") from None
    if abs(now - at) > MAX_SKEW_S or not amz_date.startswith(signed.date):
        raise SignatureError(
            "InvalidSignatureException", "Signature expired: the request time is more than 5 minutes off"
        )
    if "host" not in signed.signed_headers:
        raise SignatureError("InvalidSignatureException", "the signature must cover the Host header")
    request = canonical_request(method, path, query, headers, signed.signed_headers, body)
    if not hmac.compare_digest(signature(secret, signed, amz_date, request), signed.signature):
        raise SignatureError(
            "InvalidSignatureException",
            "The request signature we calculated does not match the signature you provided. "
            "Check your AWS Secret Access Key and signing method.",
        )
