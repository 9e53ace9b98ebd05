"""Sessions: events of one visitor grouped by inactivity (docs/sessions.md)."""
