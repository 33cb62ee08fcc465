"""Judge throughput against a slow endpoint: how close bounded concurrency comes to the ideal wall time.

    python bench/judge_throughput.py [--n 1000] [--latency 0.2] [--concurrency 16]

belle.score.judge.Judge judges --n items against tests/openai_server.py's OpenAIServer on 127.0.0.1, which answers
every chat request ``得分：0.5`` after --latency seconds; a real HTTP round trip per item (one connection each, as the
client opens them). Prints the wall time, the ideal n × latency / concurrency, and their ratio (goal ≤ 1.3×), then
checks that every item was scored with one request each.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))  # tests/openai_server.py

from openai_server import OpenAIServer, chat_reply

from belle.score.http import Endpoint
from belle.score.judge import Judge


def parse(reply: str) -> float | None:
    """The number after 得分: or 得分：."""
    found = re.search(r"得分\s*[:：]\s*(\d+(?:\.\d+)?)", reply)
    return float(found.group(1)) if found else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="items to judge")
    parser.add_argument("--latency", type=float, default=0.2, help="seconds the server takes per request")
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight at most")
    args = parser.parse_args()

    with OpenAIServer(lambda path, body, n: chat_reply("得分：0.5", delay_s=args.latency)) as server:
        judge = Judge(Endpoint(server.url, timeout_s=30), "judge-model", template_version="bench-v1", parse=parse,
                      reask="请给出得分", concurrency=args.concurrency)
        start = time.perf_counter()
        judgments = judge.judge_all([f"第 {i} 题" for i in range(args.n)])
        wall = time.perf_counter() - start
        in_flight = server.max_in_flight
    ideal = args.n * args.latency / args.concurrency
    print(f"judged {args.n} items at concurrency {args.concurrency}, {args.latency * 1000:.0f} ms per request")
    print(f"  wall    {wall:.2f} s   ({args.n / wall:.1f} items/s, at most {in_flight} requests in flight)")
    print(f"  ideal   {ideal:.2f} s   (n × latency / concurrency)")
    print(f"  ratio   {wall / ideal:.3f}×  (goal ≤ 1.3×: {'met' if wall / ideal <= 1.3 else 'NOT met'})")
    scored = sum(j.status == "scored" for j in judgments)
    if scored != args.n or judge.requests != args.n:
        sys.exit(f"expected {args.n} scored items and {args.n} requests, got {scored} and {judge.requests}")


if __name__ == "__main__":
    main()
