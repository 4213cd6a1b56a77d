"""Offline audit of a checkpoint folder: signature, hashes, card, consent then and now, lineage."""
