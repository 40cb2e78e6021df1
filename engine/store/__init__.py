"""Persistent state: SQLite (through sqlite-utils) and content-addressed blob files."""
