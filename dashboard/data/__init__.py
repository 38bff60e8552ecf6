"""Bundled data files (a real recorded GPS log with its provenance note)."""
