"""Churn-style binary classification: SQL warehouse -> validated features -> model -> API."""

__version__ = "0.1.0"
