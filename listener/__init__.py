"""Overread Listener: checks and routes radiology reports for overread."""

__version__ = "0.1.0"
