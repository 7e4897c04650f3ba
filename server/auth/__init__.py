"""Authentication: bearer tokens in, a verified Identity out."""
