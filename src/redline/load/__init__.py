"""Load-test engine."""
