"""Fixture factories: tiny checkpoints of every family, for tests, ``ascend tiny`` and tiny recipes.

- ``configs``: ``tiny_config(family, ...)``, ``special_tokens(family)``, ``FAMILIES`` (data, no torch);
- ``writer``: ``write_tiny_checkpoint`` — random weights in the real HF layout, with a trained tiny
  tokenizer and the family's chat template (``chat_templates``);
- ``scripted`` (+ ``scripted_design``, ``scripted_weights``): the GLM-5 checkpoint with constructed
  weights whose greedy output follows a known script.

Dependency direction: this package uses ``models``, ``checkpoint``, ``chat``, ``reference`` and the
smoke suite's request data; nothing in those imports it at module load (``models.catalog``
imports ``tiny_config`` lazily for ``model.source: tiny``).
"""
