"""The one training layer both methods share (no torch at import time; ``trainer.fit`` imports it when called).

* :mod:`.data`: :class:`~.data.TrainingExample` from qrels + run negatives (one negative policy flag),
  :func:`~.data.check_split` (the test split is refused everywhere), :func:`~.data.split_dev` (the dev split).
* :mod:`.config`: :class:`~.config.TrainConfig`, the shared hyperparameters and LR schedule; each method
  subclasses it (``qpeft.step.QPeftTrainConfig``, ``lmort.step.LMORTTrainConfig``).
* :mod:`.trainer`: :func:`~.trainer.fit`, the loop (AdamW, resume, early stopping, dev metrics through
  :mod:`pyserini_qpeft.evaluation`), driving a method's :class:`~.trainer.TrainingStep`.
* :mod:`.state`: ``trainer_state.json``, optimizer state (safetensors + JSON), ``epoch-N/`` and ``best/``.
"""
