"""Data: the embedded sample warehouse, SQL extraction and validation."""
