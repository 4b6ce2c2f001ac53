"""The frozen LM: loading, precision policy, prompts and the query-likelihood hot path."""
