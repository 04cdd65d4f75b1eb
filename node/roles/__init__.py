"""The three roles a member plays in a round: participant, aggregator (when elected), verifier."""
