"""On-chain coordination: wallets, the coordinator client, event reading.

Imports nothing of medfed's other packages.
"""
