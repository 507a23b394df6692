"""The model side of objbench, in two floors.

- ``lit_modules.core``: pure torch, no Lightning: the GPT backbone, its chunked LM head, decoding, the speed
  tricks, the synthetic source, and the small shared pieces (errors, atomic files, typed config groups).
- this package: the Lightning floor: ``system`` (backbone + objective + optimiser), ``data`` (the data
  modules), ``trainer`` (the Trainer from its yaml), ``callbacks`` (checkpoints and signals).

Objectives (``objectives/``) sit between the two: they import ``lit_modules.core`` and are imported here.
"""
