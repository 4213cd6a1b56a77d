"""Consent records, the append-only ledger that holds them, and clearance against a policy."""
