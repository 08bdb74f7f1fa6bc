#!/usr/bin/env python3
"""A Sluice producer in Python: pyzmq and the generated sluice_pb2 module.

    PYTHONPATH=build/python python3 examples/python/producer.py \
        --out 'tcp://*:5557' --acks tcp://localhost:5559 --count 1000

Emits payloads "0".."N-1" as stream --stream, in batches, then the stream's
end-of-stream; hears the sink's acks for that stream and sends again what is
not acknowledged (at-least-once), until the sink says the stream is
complete. Exit 0 once complete, 75 if acks stop coming. With --acks off it
sends once and exits. The wire rules it follows are in docs/protocol.md.
"""
import argparse
import os
import sys
import time

import zmq

import sluice_pb2 as pb

WIRE_VERSION = 1


def ack_topic(stream: bytes) -> bytes:
    # Every ack frame of a stream starts with these bytes: field 1 (version)
    # = 1, then field 4 (ack_stream), length-delimited.
    return bytes([0x08, WIRE_VERSION, 0x22, len(stream)]) + stream


def batch_frame(stream: bytes, seqs) -> bytes:
    env = pb.Envelope(version=WIRE_VERSION)
    now_us = int(time.time() * 1e6)
    for seq in seqs:
        env.batch.items.add(stream=stream, seq=seq, payload=str(seq).encode(),
                            produced_at_us=now_us)
    return env.SerializeToString()


def end_frame(stream: bytes, count: int) -> bytes:
    env = pb.Envelope(version=WIRE_VERSION)
    env.end_of_stream.stream = stream
    env.end_of_stream.count = count
    return env.SerializeToString()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="tcp://*:5557", help="endpoint to bind")
    ap.add_argument("--acks", default="tcp://localhost:5559",
                    help="the sink's ack endpoint to connect to, or 'off'")
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--stream", default="py" + os.urandom(5).hex())
    # Named as sluice-producer's flag: items per frame (a stage's --batch
    # is something else, items per call of an op).
    ap.add_argument("--batch-items", type=int, default=128,
                    help="most items per frame")
    ap.add_argument("--resend-after", type=float, default=2.0,
                    help="seconds without ack progress before sending again")
    ap.add_argument("--give-up", type=float, default=60.0)
    args = ap.parse_args()
    stream = args.stream.encode()  # Stream ids are bytes on the wire.
    if not 1 <= len(stream) <= 64:
        print("producer.py: --stream must be 1..64 bytes", file=sys.stderr)
        return 64

    ctx = zmq.Context()
    out = ctx.socket(zmq.PUSH)
    out.setsockopt(zmq.SNDHWM, 1000)
    out.setsockopt(zmq.LINGER, 5000)
    out.bind(args.out)
    acks = None
    if args.acks != "off":
        acks = ctx.socket(zmq.SUB)
        acks.setsockopt(zmq.MAXMSGSIZE, 1 << 21)  # Input is untrusted.
        acks.setsockopt(zmq.SUBSCRIBE, ack_topic(stream))
        acks.connect(args.acks)
    print(f"READY out={out.getsockopt_string(zmq.LAST_ENDPOINT)} "
          f"stream={args.stream}", flush=True)

    def send_all(seqs):
        seqs = sorted(seqs)
        for i in range(0, len(seqs), args.batch_items):
            out.send(batch_frame(stream, seqs[i:i + args.batch_items]))

    send_all(range(args.count))
    out.send(end_frame(stream, args.count))
    if acks is None:
        out.close()
        ctx.term()
        return 0

    outstanding = set(range(args.count))
    last_progress = time.monotonic()
    last_send = last_progress
    while True:
        if acks.poll(100):
            env = pb.Envelope()
            try:
                env.ParseFromString(acks.recv())
            except Exception:
                continue  # Not an ack: ignore it (count it, in real code).
            if not env.HasField("ack") or env.ack_stream != stream:
                continue
            before = len(outstanding)
            r = env.ack.ranges
            for begin, end in zip(r[0::2], r[1::2]):
                outstanding.difference_update(range(begin, min(end, args.count)))
            if env.ack.complete:
                print(f"all {args.count} items acknowledged", file=sys.stderr)
                out.close()
                acks.close()
                ctx.term()
                return 0
            if len(outstanding) < before:
                last_progress = time.monotonic()
        now = time.monotonic()
        if now - last_progress > args.give_up:
            print(f"producer.py: no ack progress for {args.give_up} s, "
                  f"{len(outstanding)} items outstanding", file=sys.stderr)
            return 75
        if now - max(last_progress, last_send) > args.resend_after:
            send_all(outstanding)  # At-least-once: the sink drops duplicates.
            out.send(end_frame(stream, args.count))
            last_send = now


if __name__ == "__main__":
    sys.exit(main())
