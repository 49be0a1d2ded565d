"""A/B experiments: definitions (config), deterministic assignment; statistics live beside them."""
