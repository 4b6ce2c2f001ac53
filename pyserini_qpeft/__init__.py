"""Frozen-LLM reranking (UPR, Q-PEFT) and dense retrieval (LMORT) for Pyserini.

Importing this package does no work: no JVM, no torch, no model loading.
"""
__version__ = "0.1.0"
