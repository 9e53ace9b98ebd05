"""Paths: the most frequent journeys from a start point or to an end point (docs/paths.md)."""
