"""Local devnet launcher: anvil, deployment, N local nodes on one machine."""
