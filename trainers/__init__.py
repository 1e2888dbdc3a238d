"""bioprop trainers."""
