"""textclf online service: FastAPI app serving a model/ artifact."""

__version__ = "0.1.0"
