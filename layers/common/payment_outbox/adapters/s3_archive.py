"""Archive of purged outbox rows on S3: one JSON-lines object per batch, written before the delete."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any


class S3MessageArchive:
    def __init__(
        self, client_factory: Callable[[], Any], bucket: str, *, prefix: str = "message_record/"
    ) -> None:
        self._client_factory = client_factory
        self._bucket = bucket
        self._prefix = prefix

    def store(self, key: str, lines: Sequence[str]) -> str:
        full_key = self._prefix + key
        self._client_factory().put_object(
            Bucket=self._bucket,
            Key=full_key,
            Body=("\n".join(lines) + "\n").encode(),
            ContentType="application/x-ndjson",
            ServerSideEncryption="AES256",
        )
        return f"s3://{self._bucket}/{full_key}"
