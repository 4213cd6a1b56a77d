"""Royalties: grant terms per right (`terms`), exact money (`money`), statements and their reconciliation.

Money is integers of a currency's minor unit from the moment a pool is rounded (once) to the last
line of a statement; terms come from the ledger as decimal strings, never floats.
"""
