"""A small client of the control API for CLI commands, over HTTP with the standard library only.

It finds the control plane (--control-url, else the running `headwater up` of --data-dir) and the
admin token (HEADWATER_ADMIN_TOKEN, else the one `up` stores in its data dir), and turns every
failure into a `click.ClickException` that says what went wrong in words an operator can act on.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import click

from .datadir import DataDir
from .options import admin_token_from_env

DEFAULT_TIMEOUT_SECONDS = 60.0
ERROR_BODY_EXCERPT = 300  # characters of a non-JSON error body worth showing (a proxy's HTML page)


class ControlAPIError(click.ClickException):
    """The control API answered with an error body `{status, code, message[, field]}`."""

    def __init__(
        self, status: int, code: str, message: str, field: str | None = None, hint: str | None = None
    ) -> None:
        self.status = status
        self.code = code
        self.api_message = message
        self.field = field
        where = f"{field}: " if field and not message.startswith(field) else ""  # named once
        super().__init__(f"{where}{message} ({code}, HTTP {status})" + (f"\n{hint}" if hint else ""))

    def with_hint(self, hint: str) -> ControlAPIError:
        """The same error, with a line telling the operator what to do about it."""
        return ControlAPIError(self.status, self.code, self.api_message, self.field, hint)


class ControlUnreachable(click.ClickException):
    """No answer from the control API: refused, unresolvable, timed out or cut off."""


@dataclass(frozen=True, slots=True)
class Answer:
    """A successful answer: the status, the JSON body and the headers (names in lower case)."""

    status: int
    body: Any
    headers: Mapping[str, str]


def resolve_control_url(control_url: str | None, data: DataDir) -> str:
    """--control-url / HEADWATER_CONTROL_URL, else the control URL of the stack running on `data`."""
    if control_url:
        return control_url
    record = data.read_stack()
    if record is None:
        raise click.ClickException(
            f"no running stack found in {data.root}: start `headwater up`, "
            "or pass --control-url (HEADWATER_CONTROL_URL)"
        )
    return record.control_url


def resolve_admin_token(data: DataDir) -> str:
    """HEADWATER_ADMIN_TOKEN, else the token `headwater up` stored in `data`."""
    token = admin_token_from_env() or data.admin_token()
    if not token:
        raise click.ClickException(
            f"no admin token: set HEADWATER_ADMIN_TOKEN (none is stored in {data.root} either)"
        )
    return token


def _error_from_http(error: urllib.error.HTTPError) -> click.ClickException:
    raw = error.read()
    try:
        body = json.loads(raw)
    except ValueError:
        body = None
    if isinstance(body, dict) and "code" in body:
        field = body.get("field")
        return ControlAPIError(
            int(body.get("status") or error.code),
            str(body["code"]),
            str(body.get("message", "")),
            str(field) if field is not None else None,
        )
    excerpt = raw.decode("utf-8", "replace").strip()[:ERROR_BODY_EXCERPT]
    return click.ClickException(
        f"the control API answered HTTP {error.code} {error.reason}" + (f": {excerpt}" if excerpt else "")
    )


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect is answered as the error it is here: following it would send the admin token
    (the Authorization header) to whatever origin the answer names."""

    def redirect_request(self, *_: Any, **__: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirects)


class ControlClient:
    def __init__(self, base_url: str, token: str, timeout: float = DEFAULT_TIMEOUT_SECONDS) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise click.ClickException(
                f"the control URL must start with http:// or https://, not {base_url!r}"
            )
        self.base_url = base_url.rstrip("/")
        self._token = token
        self._timeout = timeout

    @classmethod
    def resolve(
        cls, control_url: str | None, data_dir: str, timeout: float = DEFAULT_TIMEOUT_SECONDS
    ) -> ControlClient:
        """The client a CLI command uses, from its --control-url and --data-dir."""
        data = DataDir(Path(data_dir))
        return cls(resolve_control_url(control_url, data), resolve_admin_token(data), timeout)

    # -- transport --------------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None = None,
        params: Mapping[str, str | int | None] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Answer:
        """Send one request under the base URL; the JSON answer, or a ClickException."""
        url = self.base_url + path
        query = {k: str(v) for k, v in (params or {}).items() if v is not None}
        if query:
            url += "?" + urllib.parse.urlencode(query)
        all_headers = {"Authorization": f"Bearer {self._token}", "Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            all_headers["Content-Type"] = "application/json"
        all_headers.update(headers or {})
        request = urllib.request.Request(url, data=data, headers=all_headers, method=method)  # noqa: S310 - the operator's own control API
        try:
            with _OPENER.open(request, timeout=self._timeout) as response:
                raw = response.read()
                headers = {name.lower(): value for name, value in response.headers.items()}
                return Answer(response.status, json.loads(raw) if raw else None, headers)
        except urllib.error.HTTPError as exc:
            if 300 <= exc.code < 400:
                raise click.ClickException(
                    f"the control API at {self.base_url} answered with a redirect (HTTP {exc.code}) "
                    f"to {exc.headers.get('Location', '?')}; redirects are not followed, so that the "
                    "admin token never leaves for another address: set --control-url to the final one"
                ) from None
            raise _error_from_http(exc) from None
        except urllib.error.URLError as exc:
            raise self._unreachable(exc.reason) from None
        except TimeoutError as exc:
            raise self._unreachable(f"no answer within {self._timeout:g} s ({exc})") from None
        except OSError as exc:  # e.g. the connection was cut off mid-answer
            raise self._unreachable(exc) from None
        except ValueError as exc:
            raise click.ClickException(
                f"the control API at {self.base_url} sent invalid JSON: {exc}"
            ) from None

    def stream(self, path: str, body: Mapping[str, Any], sink: BinaryIO) -> int:
        """POST `body`, copying an answer of JSON lines to `sink` as it arrives; the bytes copied."""
        request = urllib.request.Request(  # noqa: S310 - the operator's own control API
            self.base_url + path,
            data=json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {self._token}", "Content-Type": "application/json"},
            method="POST",
        )
        copied = 0
        try:
            with _OPENER.open(request, timeout=self._timeout) as response:
                while chunk := response.read(65536):
                    sink.write(chunk)
                    copied += len(chunk)
        except urllib.error.HTTPError as exc:
            raise _error_from_http(exc) from None
        except urllib.error.URLError as exc:
            raise self._unreachable(exc.reason) from None
        except OSError as exc:  # timed out, or cut off mid-answer
            raise self._unreachable(exc) from None
        return copied

    def _unreachable(self, reason: object) -> ControlUnreachable:
        return ControlUnreachable(
            f"cannot reach the control API at {self.base_url}: {reason}\n"
            "Is the control plane running? Check --control-url (HEADWATER_CONTROL_URL), "
            "or start `headwater up`."
        )

    # -- endpoints --------------------------------------------------------------------------------

    def query(self, project_id: str, sql: str) -> tuple[list[str], list[list[Any]]]:
        """Read-only SQL in the project's database: (columns, rows)."""
        answer = self.request("POST", f"/v1/projects/{_segment(project_id)}/query", {"sql": sql})
        return answer.body["columns"], answer.body["rows"]

    def funnel(self, project_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """A funnel's answer per step (docs/funnels.md)."""
        answer: dict[str, Any] = self.request(
            "POST", f"/v1/projects/{_segment(project_id)}/funnels/query", body
        ).body
        return answer

    def funnel_trend(self, project_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """A funnel's answer per day of entry (docs/funnels.md, "Daily trend")."""
        answer: dict[str, Any] = self.request(
            "POST", f"/v1/projects/{_segment(project_id)}/funnels/trend", body
        ).body
        return answer

    def paths(self, project_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """The heaviest edges of people's paths, the nodes they touch, the people (docs/paths.md)."""
        answer: dict[str, Any] = self.request(
            "POST", f"/v1/projects/{_segment(project_id)}/paths/query", body
        ).body
        return answer

    def patterns(self, project_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """Suggested funnels, drivers of a goal, the next-step model (docs/patterns.md)."""
        answer: dict[str, Any] = self.request(
            "POST", f"/v1/projects/{_segment(project_id)}/patterns/query", body
        ).body
        return answer

    def delete_data_subject(self, project_id: str, body: Mapping[str, Any]) -> str:
        """Start a deletion job (docs/privacy.md, "Data subjects"); its id."""
        path = f"/v1/projects/{_segment(project_id)}/data-subjects/delete"
        job_id: str = self.request("POST", path, body).body["job_id"]
        return job_id

    def data_subject_job(self, project_id: str, job_id: str) -> dict[str, Any]:
        path = f"/v1/projects/{_segment(project_id)}/data-subjects/jobs/{_segment(job_id)}"
        job: dict[str, Any] = self.request("GET", path).body
        return job

    def export_data_subject(self, project_id: str, body: Mapping[str, Any], sink: BinaryIO) -> int:
        """A person's events and sessions as JSON lines, copied to `sink`; the bytes copied."""
        return self.stream(f"/v1/projects/{_segment(project_id)}/data-subjects/export", body, sink)

    def list_saved_funnels(self, project_id: str) -> list[dict[str, Any]]:
        """The project's saved funnels, by name then id."""
        path = f"/v1/projects/{_segment(project_id)}/funnels"
        funnels: list[dict[str, Any]] = self.request("GET", path).body["funnels"]
        return funnels

    def get_saved_funnel(self, project_id: str, funnel_id: str) -> dict[str, Any]:
        body: dict[str, Any] = self.request("GET", _funnel_path(project_id, funnel_id)).body
        return body

    def save_funnel(self, project_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """A new saved funnel from `{"name", "steps", "window", ...}`; the saved funnel."""
        path = f"/v1/projects/{_segment(project_id)}/funnels"
        saved: dict[str, Any] = self.request("POST", path, body).body
        return saved

    def replace_saved_funnel(
        self, project_id: str, funnel_id: str, body: Mapping[str, Any], if_match: int | None = None
    ) -> dict[str, Any]:
        headers = {"If-Match": f'"{if_match}"'} if if_match is not None else None
        path = _funnel_path(project_id, funnel_id)
        saved: dict[str, Any] = self.request("PUT", path, body, headers=headers).body
        return saved

    def delete_saved_funnel(self, project_id: str, funnel_id: str) -> None:
        self.request("DELETE", _funnel_path(project_id, funnel_id))

    def run_saved_funnel(self, project_id: str, funnel_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """A saved funnel's answer over `{"from", "to"[, "people"]}`, as `funnel` answers."""
        answer: dict[str, Any] = self.request(
            "POST", _funnel_path(project_id, funnel_id) + "/query", body
        ).body
        return answer

    def saved_funnel_trend(self, project_id: str, funnel_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """A saved funnel's answer per day of entry over `{"from", "to"}`."""
        answer: dict[str, Any] = self.request(
            "POST", _funnel_path(project_id, funnel_id) + "/trend", body
        ).body
        return answer

    def saved_funnel_anomalies(
        self, project_id: str, funnel_id: str, body: Mapping[str, Any]
    ) -> dict[str, Any]:
        """A saved funnel's days judged against their expected band (`{"from", "to", ...}`)."""
        answer: dict[str, Any] = self.request(
            "POST", _funnel_path(project_id, funnel_id) + "/anomalies", body
        ).body
        return answer

    def create_project(self, body: Mapping[str, Any], idempotency_key: str | None = None) -> Answer:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        return self.request("POST", "/v1/projects", body, headers=headers)

    def list_projects(self, limit: int | None = None, after: str | None = None) -> dict[str, Any]:
        """One page: `{"projects": [...], "next_after": id or None}`."""
        body: dict[str, Any] = self.request(
            "GET", "/v1/projects", params={"limit": limit, "after": after}
        ).body
        return body

    def get_project(self, project_id: str) -> dict[str, Any]:
        """`{"project": {...}, "revision": n}`."""
        body: dict[str, Any] = self.request("GET", f"/v1/projects/{_segment(project_id)}").body
        return body

    def update_project(
        self, project_id: str, patch: Mapping[str, Any], if_match: int | None = None
    ) -> dict[str, Any]:
        headers = {"If-Match": f'"{if_match}"'} if if_match is not None else None
        path = f"/v1/projects/{_segment(project_id)}"
        body: dict[str, Any] = self.request("PATCH", path, patch, headers=headers).body
        return body

    def rotate_key(self, project_id: str, kind: str, grace_seconds: int | None = None) -> dict[str, Any]:
        request: dict[str, Any] = {"kind": kind}
        if grace_seconds is not None:
            request["grace_seconds"] = grace_seconds
        path = f"/v1/projects/{_segment(project_id)}/keys/rotate"
        body: dict[str, Any] = self.request("POST", path, request).body
        return body

    def disable_project(self, project_id: str) -> dict[str, Any]:
        body: dict[str, Any] = self.request("DELETE", f"/v1/projects/{_segment(project_id)}").body
        return body

    def purge_project(self, project_id: str, confirm: str) -> dict[str, Any]:
        params = {"purge": "true", "confirm": confirm}
        body: dict[str, Any] = self.request(
            "DELETE", f"/v1/projects/{_segment(project_id)}", params=params
        ).body
        return body


def _segment(value: str) -> str:
    """A path segment, escaped: a project id the API will refuse must not change the path."""
    return urllib.parse.quote(value, safe="")


def _funnel_path(project_id: str, funnel_id: str) -> str:
    return f"/v1/projects/{_segment(project_id)}/funnels/{_segment(funnel_id)}"
