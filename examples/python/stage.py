#!/usr/bin/env python3
"""A Sluice stage worker in Python: pyzmq and the generated sluice_pb2 module.

    PYTHONPATH=build/python python3 examples/python/stage.py \
        --in tcp://localhost:5557 --out tcp://localhost:5558

Connects to its input and output like any worker (start as many as you
like), applies the token step (payload i -> token_i) to every item and
passes end-of-stream markers on. Bad frames are counted and dropped, never
fatal. Items that failed or were dropped upstream pass through untouched.
SIGINT/SIGTERM: stops, sends what it holds, exits 0.
"""
import argparse
import signal
import sys

import zmq

import sluice_pb2 as pb

KNOWN_VERSIONS = (1, 2, 3)


def op(payload: bytes) -> bytes:
    return b"token_" + payload


def stop(signum, frame):
    raise KeyboardInterrupt


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--in", dest="inp", default="tcp://localhost:5557")
    ap.add_argument("--out", default="tcp://localhost:5558")
    ap.add_argument("--max-frame-bytes", type=int, default=1 << 20)
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, stop)

    ctx = zmq.Context()
    inp = ctx.socket(zmq.PULL)
    inp.setsockopt(zmq.RCVHWM, 100)
    inp.setsockopt(zmq.MAXMSGSIZE, 2 * args.max_frame_bytes)
    inp.connect(args.inp)
    out = ctx.socket(zmq.PUSH)
    out.setsockopt(zmq.LINGER, 5000)
    out.connect(args.out)
    print(f"READY in={args.inp} out={args.out}", flush=True)

    rejected = {}
    items = 0
    try:
        while True:
            frame = inp.recv()
            env = pb.Envelope()
            reason = None
            if len(frame) > args.max_frame_bytes:
                reason = "too_large"
            else:
                try:
                    env.ParseFromString(frame)
                except Exception:
                    reason = "parse_error"
            if reason is None and not env.HasField("version"):
                reason = "missing_field"
            elif reason is None and env.version not in KNOWN_VERSIONS:
                reason = "bad_version"
            if reason is None and env.HasField("batch"):
                for item in env.batch.items:
                    if item.HasField("failure") or item.dropped:
                        continue
                    item.payload = op(item.payload)
                    items += 1
                out.send(env.SerializeToString())
            elif reason is None and env.HasField("end_of_stream"):
                out.send(frame)  # Whoever receives it passes it on.
            elif reason is None:
                reason = "wrong_kind"
            if reason:
                rejected[reason] = rejected.get(reason, 0) + 1
                print(f"dropped a frame: {reason}", file=sys.stderr)
    except KeyboardInterrupt:
        pass
    print(f"stage.py: {items} items, rejected {rejected}", file=sys.stderr)
    inp.close()
    out.close()  # Lingers up to 5 s to send what it holds.
    ctx.term()
    return 0


if __name__ == "__main__":
    sys.exit(main())
