"""The running job API against its own OpenAPI description, fuzzed with schemathesis.

Schemathesis generates requests from ``/openapi.json`` (valid and invalid ones, with an
operator token) and checks every answer: never a 5xx, never slower than a bound (no
hang), status codes, content types and bodies as the description declares them, and a
401 for any request that leaves the token out.

The default run is short (``LANDFALL_TEST_API_FUZZ_EXAMPLES`` examples per operation
and phase, 15 by default); set it higher for a long run, e.g. 500.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)

from tests.api_support import ApiServer, api_settings, new_token, start_api

pytestmark = [pytest.mark.broker]

EXAMPLES = int(os.environ.get("LANDFALL_TEST_API_FUZZ_EXAMPLES", "15"))
OPERATOR = new_token("fuzz-operator")
# A request that takes longer than this counts as a hang.
MAX_SECONDS = 10.0
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
    ignored_auth,
    unsupported_method,
    # Not positive_data_acceptance: a request can fit the schema and still be refused
    # for what only the server knows (an unknown dataset, a 30th of February, an id
    # that does not exist); those are 404s and 422s, not failures.
]


@pytest.fixture(scope="module")
def api_server(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ApiServer]:
    home = tmp_path_factory.mktemp("api-fuzz")
    settings, config_file = api_settings(home, kafka_bootstrap, [f"operator {OPERATOR} fuzzer"])
    server = start_api(settings, config_file, home / "api.log")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def api_schema(api_server: ApiServer) -> schemathesis.BaseSchema:
    config = schemathesis.Config.from_dict(
        {
            "headers": {"Authorization": f"Bearer {OPERATOR}"},
            "request-timeout": MAX_SECONDS,
            "generation": {"mode": "all", "max-examples": EXAMPLES},
            "checks": {
                "max_response_time": MAX_SECONDS,
                # Refusing an over-long target or body is rejecting it too.
                "negative_data_rejection": {
                    "expected-statuses": [400, 401, 403, 404, 405, 406, 409, 413, 414, 415, 422]
                },
            },
        }
    )
    return schemathesis.openapi.from_url(f"{api_server.base}/openapi.json", config=config)


def test_the_api_honours_its_own_description(api_schema: schemathesis.BaseSchema) -> None:
    # Each operation in turn, valid requests and invalid ones (schemathesis's own pytest
    # integration reaches into pytest internals that pytest 9 no longer has).
    failures = []
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 8, [op.label for op in operations]
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(
                max_examples=EXAMPLES,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            def exercise(case: schemathesis.Case) -> None:
                case.call_and_validate(checks=CHECKS, timeout=MAX_SECONDS)

            try:
                exercise()
            except Unsatisfiable:
                # No parameter and no body: nothing a request could get wrong.
                assert mode is GenerationMode.NEGATIVE, operation.label
            except (Exception, BaseExceptionGroup) as exc:  # noqa: BLE001 - report every operation
                # The reproducing curl line can hold a 4 KB URL: the start says enough.
                failures.append(f"{operation.label} ({mode}): {str(exc)[:3000]}")
    assert not failures, "\n\n".join(failures)
