"""`check`: can this config import? The control API is asked for the project, with the token.

Every way it can fail (an unreachable URL, a refused token, an unknown project, a proxy's answer)
becomes a FAILED status with a sentence the operator can act on, never a traceback.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

from .config import DestinationConfig

EXCERPT = 200  # characters of an unexpected answer worth quoting


@dataclass(frozen=True, slots=True)
class CheckResult:
    succeeded: bool
    message: str


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect would carry the token to whatever address it names: answered as a failure."""

    def redirect_request(self, *_: Any, **__: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirects)


def _failure_from_answer(config: DestinationConfig, status: int, raw: bytes) -> CheckResult:
    try:
        body = json.loads(raw)
    except ValueError:
        body = None
    code = body.get("code") if isinstance(body, dict) else None
    api_message = body.get("message") if isinstance(body, dict) else None
    if status in (401, 403):
        return CheckResult(
            False, f"the control API at {config.control_url} refused the token ({code or status})"
        )
    if status == 404 and code == "project_not_found":
        return CheckResult(
            False, f"project {config.project!r} does not exist at {config.control_url} ({code})"
        )
    if 300 <= status < 400:
        return CheckResult(
            False, f"{config.control_url} answered with a redirect (HTTP {status}): give the final URL"
        )
    detail = api_message or raw.decode("utf-8", "replace").strip()[:EXCERPT]
    return CheckResult(False, f"the control API at {config.control_url} answered HTTP {status}: {detail}")


def check(config: DestinationConfig) -> CheckResult:
    url = f"{config.control_url.rstrip('/')}/v1/projects/{urllib.parse.quote(config.project, safe='')}"
    request = urllib.request.Request(  # noqa: S310 - the operator's own control API, http(s) checked
        url, headers={"Authorization": f"Bearer {config.token}", "Accept": "application/json"}
    )
    try:
        with _OPENER.open(request, timeout=config.timeout_seconds) as response:
            body = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return _failure_from_answer(config, exc.code, exc.read())
    except urllib.error.URLError as exc:
        return CheckResult(False, f"cannot reach the control API at {config.control_url}: {exc.reason}")
    except (OSError, ValueError) as exc:  # timed out, cut off, or not JSON
        return CheckResult(False, f"no usable answer from the control API at {config.control_url}: {exc}")
    project = body.get("project") if isinstance(body, dict) else None
    if not isinstance(project, dict) or project.get("id") != config.project:
        return CheckResult(False, f"{config.control_url} does not answer like a headwater control API")
    if project.get("enabled") is False:
        return CheckResult(False, f"project {config.project!r} is disabled")
    return CheckResult(True, f"project {config.project!r} is reachable at {config.control_url}")
