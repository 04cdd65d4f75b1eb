"""HTTP helper of the explorer tests."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any


def get_json(url: str) -> tuple[int, dict[str, Any], dict[str, str]]:
    """GET a URL; return (status, parsed JSON body, headers), also for 4xx/5xx answers."""
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, json.loads(r.read()), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read()), dict(e.headers)
