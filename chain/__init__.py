"""On-chain coordination: wallets, the coordinator contract client, event reading. Imports nothing of medfed's."""
