"""Build machinery of ca4, kept out of the coursework module (`ca4_helpers.py`)."""
