"""Unit tests of the durable store (listener.store)."""
