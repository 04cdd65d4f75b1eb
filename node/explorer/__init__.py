"""Explorer: indexes the coordinator's events into SQLite and serves a web page + JSON API.

Everything shown comes from contract events and view calls; no node is trusted.
"""

from node.explorer.server import ExplorerHandle, start_explorer

__all__ = ["ExplorerHandle", "start_explorer"]
