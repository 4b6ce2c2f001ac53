"""Reproduction matrix (Pyserini 2CR style): conditions x datasets x expected scores, in ``beir.yaml``."""
