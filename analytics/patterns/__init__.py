"""Pattern discovery (issue 21): frequent journeys as suggested funnels, what converters do
differently, and next-step prediction, on journeys given as lists of steps (docs/patterns.md)."""
