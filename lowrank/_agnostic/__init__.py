"""Pure array-API algorithm bodies. No validation; ``xp`` is always passed explicitly."""
