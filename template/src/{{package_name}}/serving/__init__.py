"""HTTP service: app factory, request/response schemas, model runtime, observability."""
