"""Sampling for product teams: the consent gate, generation, content credentials, the replication gate."""
