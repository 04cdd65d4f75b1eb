"""Learning and aggregation: datasets, LoRA training, evaluation, canonical adapter files, aggregation.

Imports nothing of medfed's other packages.
"""
