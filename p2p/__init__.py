"""Peer-to-peer transport: libp2p host, signed gossip, adapter transfer, content ids, IPFS pinning.

Imports nothing of medfed's.
"""
