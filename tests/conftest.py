"""Shared test configuration: fixtures that reach the real stack live in ``tests/fixtures/``."""

pytest_plugins = ["tests.fixtures.stack", "tests.fixtures.platform", "tests.fixtures.private_stack"]
