"""LMORT: layer analysis, the tuner over frozen-LM states, and its training."""
