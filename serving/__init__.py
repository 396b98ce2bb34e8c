"""Serving tier: title linking, dialogue state, candidate ranking, soft-token prompts, LLM engines, OpenAI API."""
