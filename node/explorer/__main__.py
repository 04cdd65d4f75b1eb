"""`python -m node.explorer --rpc URL --coordinator ADDR [--port 8080] ...`."""

import sys

from node.explorer.cli import main

sys.exit(main())
