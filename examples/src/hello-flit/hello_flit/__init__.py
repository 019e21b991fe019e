"""Example package built by flit_core."""

GREETING = "hello from flit"
