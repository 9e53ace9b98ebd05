"""Control plane: projects, keys and origins in the HW_PROJECTS KV bucket, ClickHouse migrations.

Imports nothing else of headwater; the edge and the consumers import it.
"""
