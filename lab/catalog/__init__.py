"""Catalogue ingest: audio + metadata in, verified catalogue items out."""
