#!/usr/bin/env python3
"""The result step of the token-then-result job as a co-process.

    sluice-stage --op exec --exec 'python3 examples/python/result.py [MAX_MS]'

Maps "token_i" to "result_i". Anything else cannot be a token: the answer
"!error not_a_token: ..." fails that item for good (the sink dead-letters
it); "!retry REASON: ..." would ask the stage to try it again.
"""
import random
import sys
import time

max_s = float(sys.argv[1]) / 1000 if len(sys.argv) > 1 else 0.0
for line in sys.stdin:
    payload = line.rstrip("\n")
    if max_s:
        time.sleep(random.uniform(0, max_s))
    if payload.startswith("token_"):
        sys.stdout.write("result_" + payload[len("token_"):] + "\n")
    else:
        sys.stdout.write(f"!error not_a_token: {payload!r} is not a token\n")
    sys.stdout.flush()
