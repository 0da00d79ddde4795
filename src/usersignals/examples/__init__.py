"""Example signal modules."""
