"""Internal helpers shared by every public module (not public API)."""
