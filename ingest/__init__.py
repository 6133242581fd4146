"""Ingest: load → split → embed → sync files into the Chroma index (`python -m ingest`)."""
