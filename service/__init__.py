"""bioprop service."""
