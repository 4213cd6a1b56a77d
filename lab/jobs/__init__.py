"""Hydra entry points: each job composes the pieces upstream of it and writes one artefact."""
