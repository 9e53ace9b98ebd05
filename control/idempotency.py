"""Idempotent project creation: a retried `POST /projects` with the same `Idempotency-Key` gets the
first answer again, for 24 hours.

The first answer holds the new secret key, which headwater otherwise never stores. It is kept here
encrypted (AES-GCM) under a key derived from the Idempotency-Key, which only the client knows, and a
secret of the control plane; the record is found by an HMAC of the Idempotency-Key under that
secret. Whoever reads the bucket without the server secret can neither find the record of a
guessed Idempotency-Key nor decrypt one; without the client's key, the control plane cannot either.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
from dataclasses import dataclass
from typing import Any

import orjson
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from headwater.core.service.errors import APIError
from headwater.core.service.kvbuckets import ensure_bucket

from .settings import ControlSettings

IDEMPOTENCY_BUCKET = "HW_IDEMPOTENCY"
RETENTION_SECONDS = 24 * 3600
MAX_KEY_LENGTH = 255


@dataclass(frozen=True, slots=True)
class StoredAnswer:
    status: int
    body: dict[str, Any]


async def ensure_idempotency_bucket(js: JetStreamContext, replicas: int) -> KeyValue:
    return await ensure_bucket(
        js,
        KeyValueConfig(
            bucket=IDEMPOTENCY_BUCKET,
            description="headwater idempotent create answers (encrypted), 24 h",
            ttl=RETENTION_SECONDS,
            storage=StorageType.FILE,
            replicas=replicas,
        ),
    )


def validate_idempotency_key(value: str) -> str:
    if not value or len(value) > MAX_KEY_LENGTH or not value.isprintable():
        raise APIError(
            400, "invalid_idempotency_key", f"Idempotency-Key must be 1-{MAX_KEY_LENGTH} printable characters"
        )
    return value


def server_secret(settings: ControlSettings) -> bytes:
    """HEADWATER_IDEMPOTENCY_SECRET when set, else one derived from the admin tokens: either way
    the same on every control replica. Changing it forgets the answers of the last 24 hours (a retry
    then gets 409 `project_exists` instead of its first answer)."""
    if settings.idempotency_secret:
        return settings.idempotency_secret.encode()
    tokens = "\n".join(sorted(t.token for t in settings.admin_tokens))
    return hashlib.sha256(b"headwater idempotency:" + tokens.encode()).digest()


class IdempotencyStore:
    def __init__(self, kv: KeyValue, secret: bytes) -> None:
        self._kv = kv
        self._secret = secret

    def _derive(self, purpose: bytes, idempotency_key: str) -> bytes:
        return hmac.digest(self._secret, purpose + idempotency_key.encode(), "sha256")

    def _record_key(self, idempotency_key: str) -> str:
        return "create." + self._derive(b"lookup:", idempotency_key).hex()

    def _cipher(self, idempotency_key: str) -> AESGCM:
        return AESGCM(self._derive(b"encrypt:", idempotency_key))

    @staticmethod
    def request_fingerprint(body: dict[str, Any]) -> str:
        return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()

    async def recall(self, idempotency_key: str, fingerprint: str) -> StoredAnswer | None:
        """The stored answer for this key; 422 if the key was used with a different request."""
        try:
            entry = await self._kv.get(self._record_key(idempotency_key))
        except KeyNotFoundError:
            return None
        if not entry.value:
            return None
        record = orjson.loads(entry.value)
        if record["fingerprint"] != fingerprint:
            raise APIError(
                422,
                "idempotency_key_reused",
                "this Idempotency-Key was used with a different request body",
            )
        plain = self._cipher(idempotency_key).decrypt(
            bytes.fromhex(record["nonce"]), bytes.fromhex(record["answer"]), None
        )
        answer = orjson.loads(plain)
        return StoredAnswer(answer["status"], answer["body"])

    async def remember(self, idempotency_key: str, fingerprint: str, answer: StoredAnswer) -> None:
        nonce = os.urandom(12)
        plain = orjson.dumps({"status": answer.status, "body": answer.body})
        record = {
            "fingerprint": fingerprint,
            "nonce": nonce.hex(),
            "answer": self._cipher(idempotency_key).encrypt(nonce, plain, None).hex(),
        }
        # A concurrent retry may have stored the same answer first.
        with contextlib.suppress(KeyWrongLastSequenceError):
            await self._kv.create(self._record_key(idempotency_key), orjson.dumps(record))
