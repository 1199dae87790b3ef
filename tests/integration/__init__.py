"""Integration tests: the real daemon as a subprocess on a loopback port."""
