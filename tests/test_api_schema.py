"""Property-based API fuzzing with schemathesis against the app's own OpenAPI spec: no 5xx.

Bounded (20 derandomised examples per operation). The two endless streams (/v1/events,
/v1/stream.mjpg) are excluded here and covered with bounded requests in test_api.py.
"""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from edge.api.app import create_app
from edge.config import load_settings
from edge.live.runtime import Runtime
from tests.fakes.recognizer import FakeRecognizer, make_cards

_settings = load_settings(None, limits={"max_upload_bytes": 200_000, "max_pixels": 4_000_000})
APP = create_app(_settings, Runtime(_settings, FakeRecognizer(make_cards(5))))

schema = schemathesis.openapi.from_asgi("/openapi.json", APP).exclude(
    path_regex=r"^/v1/(events|stream\.mjpg)$"
)


@schema.parametrize()
@settings(
    max_examples=20,
    derandomize=True,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_no_operation_answers_with_a_server_error(case: schemathesis.Case) -> None:
    response = case.call_and_validate(checks=[not_a_server_error])
    if response.status_code >= 400:
        body = response.json()
        assert {"code", "message"} <= set(body), body
