#!/usr/bin/env python3
"""The token step of the token-then-result job as a co-process.

    sluice-stage --op exec --exec 'python3 examples/python/token.py [MAX_MS]'

Protocol (--exec-framing lines, the default): one payload per line on stdin,
one answer per line on stdout, in the same order. Flush after each answer:
the stage waits for it. An optional argument simulates up to MAX_MS of API
latency per item. Anything written to stderr ends up in the stage's log.
"""
import random
import sys
import time

max_s = float(sys.argv[1]) / 1000 if len(sys.argv) > 1 else 0.0
print(f"token.py ready (pid {__import__('os').getpid()})", file=sys.stderr, flush=True)
for line in sys.stdin:
    i = line.rstrip("\n")
    if max_s:
        time.sleep(random.uniform(0, max_s))
    sys.stdout.write(f"token_{i}\n")
    sys.stdout.flush()
