"""The site daemon: CLI, config, round state machine, local state store. Composes chain, p2p and training."""
