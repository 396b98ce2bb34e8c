"""LLM engines behind one interface: an embedded prompt `[T, H]` in, streamed text out."""
