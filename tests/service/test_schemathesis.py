"""Property-based fuzzing of the whole OpenAPI schema against the live server: no input may cause a 5xx.

The schema is loaded from the running server and every operation is fuzzed through schemathesis's programmatic API
(``as_strategy`` under a plain hypothesis ``@given``) rather than its pytest plugin, whose lazy fixture
parametrisation depends on pytest internals that change between major releases.
"""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

EXAMPLES_PER_OPERATION = 8


def _fuzz(operation) -> None:
    # The frame stream of a real job would block until the job ends; fuzzed ids never match one, so it stays quick.
    @given(case=operation.as_strategy())
    @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    def run(case) -> None:
        case.call_and_validate(checks=[not_a_server_error], timeout=30)

    run()


def test_no_server_errors(server):
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 5, "the schema should list the service's operations"
    failures = {}
    for operation in operations:
        try:
            _fuzz(operation)
        except Exception as error:  # noqa: BLE001 - collect every operation's failure, then report them together
            failures[operation.label] = error
    assert not failures, "\n\n".join(f"{label}:\n{error}" for label, error in failures.items())
