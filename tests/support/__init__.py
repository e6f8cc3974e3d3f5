"""Shared test helpers: toy models (models.py) and the real-server fixture (server.py)."""
