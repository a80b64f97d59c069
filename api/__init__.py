"""The seem-vos HTTP API (FastAPI): upload jobs, stream their frames, download results."""
