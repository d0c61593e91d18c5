"""The in-process parity lanes fixture (``lanes``), shared by the harness self-tests."""

from tests.parity_tests.test_harness_catches_bugs import lanes

__all__ = ["lanes"]
