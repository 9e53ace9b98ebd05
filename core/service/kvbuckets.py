"""JetStream KV buckets opened by name, created when missing."""

from __future__ import annotations

from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig
from nats.js.errors import BucketNotFoundError
from nats.js.kv import KeyValue


async def ensure_bucket(js: JetStreamContext, config: KeyValueConfig) -> KeyValue:
    """Open a KV bucket, creating it when missing (creating with an identical config is idempotent)."""
    try:
        return await js.key_value(config.bucket)
    except BucketNotFoundError:
        return await js.create_key_value(config)
