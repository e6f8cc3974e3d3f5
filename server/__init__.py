"""The bundled Triton-compatible model server (import name `server`)."""

# Kept equal to the project version in pyproject.toml (reported by GET /v2).
__version__ = "0.1.0"
