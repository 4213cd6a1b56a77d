"""Cleared snapshots, their EnCodec code cache, and the loader that meters exposure."""
