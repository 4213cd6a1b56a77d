"""Small shared helpers with no upstream dependencies."""
