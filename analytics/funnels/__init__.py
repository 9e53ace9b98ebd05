"""Funnels: how far each person gets through an ordered list of steps (docs/funnels.md)."""
