"""Tests of the load tools (loadtest/): their pure parts only; the bench is its own command."""
