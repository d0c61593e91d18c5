"""The engine behind ``make parity``."""
