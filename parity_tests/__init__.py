"""The parity harness: replays identical requests against blue and green and compares answers and
side effects. ``python -m parity_tests`` (or ``make parity``) runs it; ``pytest parity_tests``
runs each case as its own test."""
