"""A producer process: runs one client-side action of one system and prints its result.

    python -m bench.client '{"system": "pgq", "env": "...", "action": "prequeue", "kwargs": {}}'

The harness starts one per action (see ``System.client``) so every producer starts clean.
"""

from __future__ import annotations

import json
import sys

from bench.config import BenchEnv
from bench.systems import CLIENT_MARK, system_class


def main(argv: list[str]) -> int:
    request = json.loads(argv[1])
    env = BenchEnv.from_json(request["env"])
    system = system_class(request["system"])(env)
    action = getattr(system, f"client_{request['action']}")
    result = action(**request["kwargs"])
    sys.stdout.flush()
    print(CLIENT_MARK + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
