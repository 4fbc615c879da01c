"""lgvq-loggers: ``[[loggers]]`` that mirror an lgvq run into TensorBoard or MLflow."""

__version__ = "0.1.0"
