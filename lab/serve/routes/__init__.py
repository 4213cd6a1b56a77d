"""The pages, one module per concern; `common` holds what they share (templates, opening the stores)."""
