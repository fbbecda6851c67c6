"""Persistence: SQLite by default."""
