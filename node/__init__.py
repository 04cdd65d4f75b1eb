"""The site daemon: CLI, config, round state machine, local state store, explorer. Composes chain, p2p and training."""
