#!/usr/bin/env python3
"""A Sluice sink in Python: pyzmq and the generated sluice_pb2 module.

    PYTHONPATH=build/python python3 examples/python/sink.py \
        --in 'tcp://*:5558' --acks 'tcp://*:5559' --output results.txt

Binds its input and its ack socket, takes each (stream, seq) once, writes
each result payload as a line, acknowledges what it has written (so that
producers stop replaying it), and decides completion: a stream is complete
once its end-of-stream arrived and every seq below its count, succeeded or
failed. Exits 0 after --streams complete streams (65 if items failed).
"""
import argparse
import json
import sys
import time

import zmq

import sluice_pb2 as pb

KNOWN_VERSIONS = (1, 2, 3)
ACK_EVERY_S = 0.02


class Stream:
    def __init__(self):
        self.seen = set()
        self.count = None
        self.pending = []  # Seqs taken but not yet acknowledged.
        self.duplicates = 0
        self.failed = 0

    def complete(self):
        return self.count is not None and len(self.seen) == self.count


HELLO_PREFIX = b"\x00sluice-hello"  # Then an 8-byte epoch, then the id.


def to_ranges(seqs):
    ranges = []
    for seq in sorted(set(seqs)):  # Merge into [begin, end) ranges.
        if ranges and ranges[-1][1] == seq:
            ranges[-1][1] = seq + 1
        else:
            ranges.append([seq, seq + 1])
    return ranges


def ack_frame(stream: bytes, seqs, s: Stream) -> bytes:
    env = pb.Envelope(version=1, ack_stream=stream)
    for begin, end in to_ranges(seqs):
        env.ack.ranges.extend([begin, end])
    env.ack.end_of_stream = s.count is not None
    env.ack.complete = s.complete()
    return env.SerializeToString()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--in", dest="inp", default="tcp://*:5558")
    ap.add_argument("--acks", default="tcp://*:5559", help="bind, or 'off'")
    ap.add_argument("--output", required=True)
    ap.add_argument("--report")
    ap.add_argument("--streams", type=int, default=1)
    ap.add_argument("--max-frame-bytes", type=int, default=1 << 20)
    args = ap.parse_args()

    ctx = zmq.Context()
    inp = ctx.socket(zmq.PULL)
    inp.setsockopt(zmq.MAXMSGSIZE, 2 * args.max_frame_bytes)
    inp.bind(args.inp)
    acks = None
    if args.acks != "off":
        acks = ctx.socket(zmq.XPUB)  # XPUB: sees subscriptions arrive.
        acks.setsockopt(zmq.MAXMSGSIZE, 256)
        acks.setsockopt(zmq.LINGER, 2000)
        acks.bind(args.acks)
    ready = f"READY in={inp.getsockopt_string(zmq.LAST_ENDPOINT)}"
    if acks:
        ready += f" acks={acks.getsockopt_string(zmq.LAST_ENDPOINT)}"
    print(ready, flush=True)

    streams = {}
    done = 0
    rejected = 0
    output = open(args.output, "wb")
    poller = zmq.Poller()
    poller.register(inp, zmq.POLLIN)
    if acks:
        poller.register(acks, zmq.POLLIN)
    last_ack = time.monotonic()

    def publish(final=False):
        output.flush()  # An ack never runs ahead of the output.
        for sid, s in streams.items():
            if acks and (s.pending or final):
                acks.send(ack_frame(sid, s.pending, s))
            s.pending = []

    while done < args.streams:
        events = dict(poller.poll(int(ACK_EVERY_S * 1000)))
        if acks in events:
            sub = acks.recv()  # A subscription: the next publish reaches it.
            if sub[:1] == b"\x01" and sub[1:14] == HELLO_PREFIX and len(sub) > 22:
                # A producer's hello: welcome it with what we hold of its
                # stream, so that a restarted producer sends only the rest.
                # (This sink keeps no state across restarts and does not
                # refuse a second producer; the C++ sink does both.)
                epoch = int.from_bytes(sub[14:22], "big")
                sid = sub[22:]
                s = streams.get(sid, Stream())
                env = pb.Envelope(version=1, ack_stream=sid)
                for begin, end in to_ranges(s.seen):
                    env.ack.ranges.extend([begin, end])
                env.ack.end_of_stream = s.count is not None
                env.ack.complete = s.complete()
                env.ack.hello_epoch = epoch
                env.ack.answer = pb.WELCOME
                acks.send(env.SerializeToString())
        if inp in events:
            frame = inp.recv()
            env = pb.Envelope()
            try:
                env.ParseFromString(frame)
                ok = env.HasField("version") and env.version in KNOWN_VERSIONS
            except Exception:
                ok = False
            if not ok:
                rejected += 1
                continue
            if env.HasField("batch"):
                for item in env.batch.items:
                    # Version 3: the batch names the stream of items that
                    # carry none of their own.
                    sid = item.stream or env.batch.stream
                    s = streams.setdefault(sid, Stream())
                    if s.count is not None and item.seq >= s.count:
                        continue  # Beyond the count: not ours to write.
                    if item.seq in s.seen:
                        s.duplicates += 1  # Its ack was lost: ack again.
                    else:
                        s.seen.add(item.seq)
                        if item.HasField("failure"):
                            s.failed += 1
                        elif not item.dropped:
                            for p in [item.payload, *item.more_payloads]:
                                output.write(p + b"\n")
                    s.pending.append(item.seq)
            elif env.HasField("end_of_stream"):
                s = streams.setdefault(env.end_of_stream.stream, Stream())
                if s.count is None:
                    s.count = env.end_of_stream.count
            done = sum(1 for s in streams.values() if s.complete())
        if time.monotonic() - last_ack >= ACK_EVERY_S or done >= args.streams:
            publish(final=done >= args.streams)
            last_ack = time.monotonic()

    # Producers that subscribe late still hear "complete": answer each new
    # subscription for a moment before leaving.
    deadline = time.monotonic() + 1.0
    while acks and time.monotonic() < deadline:
        if acks.poll(100):
            acks.recv()
            publish(final=True)
    output.close()
    failed = sum(s.failed for s in streams.values())
    report = {
        "complete": True,
        "expected": sum(s.count for s in streams.values()),
        "unique": sum(len(s.seen) for s in streams.values()),
        "duplicates": sum(s.duplicates for s in streams.values()),
        "failed": failed,
        "rejected": rejected,
    }
    if args.report:
        with open(args.report, "w") as f:
            json.dump(report, f)
    print(f"COMPLETE: {report['unique']} of {report['expected']} items, "
          f"{failed} failed, {report['duplicates']} duplicates", flush=True)
    inp.close()
    if acks:
        acks.close()
    ctx.term()
    return 65 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
