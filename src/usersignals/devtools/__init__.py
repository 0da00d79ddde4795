"""Tools for development, tests, demos and benchmarks (not needed in production)."""
