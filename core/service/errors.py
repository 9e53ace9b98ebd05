"""The control plane's one error type, mapped to a JSON body in one place (control/app.py)."""

from __future__ import annotations


class APIError(Exception):
    """An error the API reports to its caller: HTTP status, machine-readable code, message, field."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field

    def to_dict(self) -> dict[str, object]:
        body: dict[str, object] = {"status": self.status, "code": self.code, "message": self.message}
        if self.field is not None:
            body["field"] = self.field
        return body


class ProjectExists(APIError):
    def __init__(self, project_id: str) -> None:
        super().__init__(409, "project_exists", f"project {project_id!r} already exists", "id")


class ProjectNotFound(APIError):
    def __init__(self, project_id: str) -> None:
        super().__init__(404, "project_not_found", f"no project {project_id!r}")
