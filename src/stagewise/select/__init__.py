"""Seed 001's three-stage data selection, on Hugging Face causal LMs.

- :mod:`~stagewise.select.gate`: the quality gate in every decoder layer; convert, load
- :mod:`~stagewise.select.warmup`: stage 1, train the gates (:mod:`~stagewise.select.losses`)
- :mod:`~stagewise.select.router`: stage 2, per-token gates and perplexities per dataset
- :mod:`~stagewise.select.batch_selection`: the quality score
  (:mod:`~stagewise.select.scoring`) and the top share of the records
- :mod:`~stagewise.select.finetune`: stage 3, LoRA on the selection
- :mod:`~stagewise.select.task`: the stages as pipeline task functions
- :mod:`~stagewise.select.records`, :mod:`~stagewise.select.encoding`: chat records
- :mod:`~stagewise.select.tiny`, :mod:`~stagewise.select.docstrings`: a tiny model and
  real text with no download, for tests, the example and the benchmarks

The submodules import torch; this package itself imports nothing.
"""
