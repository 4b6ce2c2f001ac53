"""Training of Q-PEFT hint modules: examples from qrels + first-stage runs, the loss, and the loop.

Importing this package imports nothing heavy; ``loop`` imports torch.
"""
