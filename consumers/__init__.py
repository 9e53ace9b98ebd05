"""Durable JetStream consumers: decode envelopes, turn them into rows, batch them into ClickHouse."""
