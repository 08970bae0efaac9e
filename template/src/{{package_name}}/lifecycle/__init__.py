"""The model lifecycle around the classical pipeline: registry, promotion gate, monitoring,
retraining and traffic simulation. Imported by the command line only, never by the service."""
