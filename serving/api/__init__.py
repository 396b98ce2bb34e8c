"""The OpenAI-compatible HTTP entrypoint: protocol models, handler logic, thin routes, app factory."""
