"""Built-in run callbacks."""
