"""Retrieval tier: MovieLens data, sampled-batch ranking losses with corrected rank estimates, FAISS serving."""
