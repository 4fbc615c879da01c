"""lgvq and the field's other tools: other projects' checkpoints in (``lgvq import``), lgvq's
tokenizers out (``lgvq export``). The formats themselves are plugins (kinds ``importer`` and
``exporter``); this package runs them and writes what they produce."""
