"""The non-IID study reproduction: base model vs single-site LoRA vs federated LoRA (fedavg, exact).

Federated rounds are simulated in one process with :mod:`training.aggregation`; no chain, no network.
Entry point: ``medfed-experiment`` (:func:`training.experiment.cli.main`).
"""
