"""Item-Language Model: a Q-Former over CF item embeddings that speaks to a frozen chat LLM through soft tokens."""
