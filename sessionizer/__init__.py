"""The sessionizer role: keeps each project's `sessions` table current (docs/sessions.md)."""
