"""S3 record shapes: what a file event looks like, so a handler written for S3 works unchanged.

An ``Object Created`` / ``Object Deleted`` event carries the file twice: as an S3 event
notification record (``detail.Records[0].s3...``, what S3 -> Lambda delivers) and as S3's
EventBridge event (``detail.bucket`` / ``detail.object``). Keys are URL-encoded as S3 encodes
them in notifications (``red+flower.jpg``), from the name's raw bytes: any name a folder can
hold (newlines, control characters, bytes that are not UTF-8) becomes a plain-ASCII key that
``unquote_plus`` turns back into the exact name (``unquote_to_bytes`` for one that is not
UTF-8). A handler that joins a decoded key to a folder gets the file's own path: a name has no
``/``, so no key decodes to a ``..`` part.

Pure functions of their inputs: no I/O, no clock (the caller passes times and sequencers).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote_plus, unquote_to_bytes

SOURCE = "sluice.files"


@dataclass(frozen=True, slots=True)
class FileFacts:
    """What identifies one version of a file: the fields of its S3 record."""

    rel: str  #: path relative to the folder, ``/``-separated
    key: str  #: ``rel`` URL-encoded as S3 encodes keys
    size: int
    mtime_ns: int
    etag: str  #: MD5 hex of the content

    @property
    def identity(self) -> list[Any]:
        return [self.size, self.mtime_ns, self.etag]


def encode_key(rel: str) -> str:
    """URL-encode a relative path the way S3 notifications encode object keys (``red+flower.jpg``)."""
    return quote_plus(os.fsencode(rel), safe="/")


def decode_key(key: str) -> str:
    return os.fsdecode(unquote_to_bytes(key.replace("+", " ")))


def iso(ns: int) -> str:
    stamp = datetime.fromtimestamp(ns / 1e9, UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"


@dataclass(frozen=True, slots=True)
class Bucket:
    """The watched folder as S3 names it: the folder's name is the bucket, the trigger the configuration."""

    name: str
    resource: str  #: the folder's absolute path, the envelope's ``resources[0]``
    configuration: str  #: the trigger's name (``configurationId``)

    def created(self, facts: FileFacts, sequencer: str) -> dict[str, Any]:
        when = iso(facts.mtime_ns)
        obj = {"key": facts.key, "size": facts.size, "eTag": facts.etag, "sequencer": sequencer}
        flat = {"key": facts.key, "size": facts.size, "etag": facts.etag, "sequencer": sequencer}
        detail = {
            "version": "0",
            "Records": [self._record("ObjectCreated:Put", when, obj)],
            "bucket": {"name": self.name},
            "object": flat,
            "reason": "PutObject",
            "request-id": sequencer,
            "requester": "local",
        }
        return self._envelope("Object Created", when, detail)

    def removed(self, key: str, sequencer: str, now_ns: int) -> dict[str, Any]:
        when = iso(now_ns)
        obj = {"key": key, "sequencer": sequencer}
        detail = {
            "version": "0",
            "Records": [self._record("ObjectRemoved:Delete", when, obj)],
            "bucket": {"name": self.name},
            "object": dict(obj),
            "reason": "DeleteObject",
            "deletion-type": "Permanently Deleted",
            "request-id": sequencer,
            "requester": "local",
        }
        return self._envelope("Object Deleted", when, detail)

    def _envelope(self, detail_type: str, time_iso: str, detail: dict[str, Any]) -> dict[str, Any]:
        return {
            "version": "0",
            "source": SOURCE,
            "detail-type": detail_type,
            "time": time_iso,
            "account": "local",
            "region": "local",
            "resources": [self.resource],
            "detail": detail,
        }

    def _record(self, event_name: str, time_iso: str, obj: dict[str, Any]) -> dict[str, Any]:
        return {
            "eventVersion": "2.1",
            "eventSource": "sluice:files",
            "awsRegion": "local",
            "eventTime": time_iso,
            "eventName": event_name,
            "userIdentity": {"principalId": "local"},
            "requestParameters": {"sourceIPAddress": "127.0.0.1"},
            "responseElements": {"x-amz-request-id": obj["sequencer"], "x-amz-id-2": "local"},
            "s3": {
                "s3SchemaVersion": "1.0",
                "configurationId": self.configuration,
                "bucket": {
                    "name": self.name,
                    "ownerIdentity": {"principalId": "local"},
                    "arn": f"arn:aws:s3:::{self.name}",
                },
                "object": obj,
            },
        }
