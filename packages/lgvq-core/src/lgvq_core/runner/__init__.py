"""The training runner: one loop for every backbone (``lgvq run``)."""
