"""Q-PEFT: query-dependent hint modules, their rerankers, checkpoints and loss."""
