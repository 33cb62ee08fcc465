"""The prepared data cache: prepare throughput, warm-cache open time, a worker's anonymous memory, and a projection
for BELLE-2M.

    python bench/data_cache.py [--n 50000] [--sizes 20000 200000 1000000] [--max-length 1024]

Side by side in one run, on the same generated instruction records (generate_instruction_records) and the tiny
tokenizer, the Rust tokenizer held to one thread (RAYON_NUM_THREADS=1) so that "1 process" means one core:
  prepare, all cores   belle.data.prepare: records parsed, checked, templated and tokenized in one process per core,
                       packed and written by this process (flat token arrays + index)
  prepare, 1 process   the same in this process
  in-worker (before)   what every Ray Train worker did before the cache, each rank on its own: build_sft_samples +
                       pack into lists
  BELLE-style          bench/data_prep.py's baseline: one tokenizer call per segment, sample by sample (in memory)
The projection for BELLE-2M splits the work measured here into the serial part (this process's CPU time during the
all-cores prepare: reading lines, packing, writing; per sample) and the rest (per token, spread over the cores).
Then, for each of --sizes records: RssAnon of a fresh process after it opened the cache and read every training row
(an epoch, collated 8 rows at a time), against the in-worker path holding its rows (up to 200k records).
"""

from __future__ import annotations

import argparse
import json
import os

os.environ.setdefault("RAYON_NUM_THREADS", "1")  # before the tokenizers library starts its threads
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from belle.config import DataConfig
from belle.data.cache import open_cache
from belle.data.dataset import build_sft_samples
from belle.data.generate import generate_instruction_records
from belle.data.packing import pack
from belle.data.prepare import prepare
from belle.model.tokenizer import tiny_tokenizer

sys.path.insert(0, str(Path(__file__).parent))
from data_prep import belle_style  # noqa: E402

BELLE_2M = (2_000_000, 300)  # samples, tokens per sample
NODE_CORES = 16

WORKER = """
import sys, time
from belle.config import DataConfig
from belle.data.records import batched
from belle.model.tokenizer import tiny_tokenizer

def rss_anon():
    return next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("RssAnon:"))

import torch  # noqa: F401  (a worker has it loaded)
from belle.data.packing import collate
tokenizer = tiny_tokenizer()
data = DataConfig(name="bench", path=sys.argv[2], cache_dir=sys.argv[3], max_length=int(sys.argv[4]))
before = rss_anon()
if sys.argv[1] == "cache":
    from belle.data.cache import open_cache
    _, rows = open_cache(data, tokenizer)
else:
    from belle.data.dataset import build_sft_samples
    from belle.data.packing import pack
    samples, _ = build_sft_samples(data.path, tokenizer, data.max_length)
    rows = list(pack(samples, data.max_length, tokenizer.pad_token_id))
    del samples
for chunk in batched(range(len(rows)), 8):
    collate([rows[i] for i in chunk])
print(rss_anon() - before, len(rows))
"""


def write_records(path: Path, n: int) -> Path:
    with path.open("w", encoding="utf-8") as f:
        for part, start in enumerate(range(0, n, 100_000)):
            for record in generate_instruction_records(min(100_000, n - start), seed=part + 1):
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
    return path


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def worker_rss(mode: str, path: Path, cache: Path, max_length: int) -> tuple[int, int]:
    out = subprocess.run([sys.executable, "-c", WORKER, mode, str(path), str(cache), str(max_length)],
                         capture_output=True, text=True, check=True).stdout.split()
    return int(out[0]), int(out[1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50_000, help="records for the throughput comparison")
    parser.add_argument("--sizes", type=int, nargs="+", default=[20_000, 200_000], help="records for RssAnon")
    parser.add_argument("--max-length", type=int, default=1024)
    args = parser.parse_args(argv)
    cores = len(os.sched_getaffinity(0))
    tokenizer = tiny_tokenizer()
    work = Path(tempfile.mkdtemp(prefix="belle-bench-"))
    print(f"{os.cpu_count()} CPUs ({cores} usable), {args.n} generated instruction records, max length "
          f"{args.max_length}, tiny tokenizer; scratch {work}")

    path = write_records(work / "records.jsonl", args.n)
    data = DataConfig(name="bench", path=str(path), cache_dir=str(work / "all"), max_length=args.max_length)
    cpu = time.process_time()
    prepared, t_all = timed(lambda: prepare(data, tokenizer, processes=cores))
    serial = time.process_time() - cpu  # this process's own share: reading, packing, writing
    one = DataConfig(name="bench", path=str(path), cache_dir=str(work / "one"), max_length=args.max_length)
    _, t_one = timed(lambda: prepare(one, tokenizer, processes=1))
    _, t_worker = timed(lambda: list(pack(build_sft_samples(str(path), tokenizer, args.max_length)[0],
                                          args.max_length, tokenizer.pad_token_id)))
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    _, t_belle = timed(lambda: belle_style(records, tokenizer, args.max_length))
    stats = prepared.meta["stats"]
    print(f"\n{'path':<22} {'seconds':>8} {'samples/s':>10} {'vs in-worker':>13}")
    for name, seconds in (("prepare, all cores", t_all), ("prepare, 1 process", t_one),
                          ("in-worker (before)", t_worker), ("BELLE-style (memory)", t_belle)):
        print(f"{name:<22} {seconds:8.2f} {args.n / seconds:10.0f} {t_worker / seconds:12.2f}x")
    opens = [timed(lambda: open_cache(data, tokenizer)[1][0])[1] for _ in range(5)]
    print(f"warm-cache open (key, memory maps, first row): median {statistics.median(opens) * 1000:.0f} ms of 5")

    print(f"\n{'records':>9} {'tokens':>11} {'cache RssAnon MiB':>18} {'in-worker RssAnon MiB':>22}")
    measured = []
    for n in args.sizes:
        sized = write_records(work / f"records-{n}.jsonl", n)
        sized_data = DataConfig(name="bench", path=str(sized), cache_dir=str(work / "all"), max_length=args.max_length)
        tokens = prepare(sized_data, tokenizer, processes=cores).meta["stats"]["tokens"]
        cached, _ = worker_rss("cache", sized, work / "all", args.max_length)
        before = worker_rss("lists", sized, work / "all", args.max_length)[0] if n <= 200_000 else None
        measured.append((tokens, cached))
        shown = f"{before / 2**20:22.1f}" if before is not None else f"{'(not run)':>22}"
        print(f"{n:9d} {tokens:11d} {cached / 2**20:18.1f} {shown}")
    if len(measured) > 1:
        (t0, r0), (t1, r1) = measured[0], measured[-1]
        print(f"cache growth: {(r1 - r0) / (t1 - t0):.3f} bytes of RssAnon per token (target <= 10)")

    samples, per_sample = BELLE_2M
    per_token = max(t_one - serial, 0) / stats["tokens"]  # one core's parallel work per token
    minutes = (serial / args.n * samples + per_token * samples * per_sample / NODE_CORES) / 60
    print(f"serial part: {serial:.2f} s of this process's CPU in the all-cores prepare "
          f"({serial / args.n * 1e6:.0f} us per sample); the rest {per_token * 1e6:.2f} us per token on one core")
    size = {dtype: samples * per_sample * (width + 1) + 16 * samples for dtype, width in (("uint16", 2), ("int32", 4))}
    lists = 80 * samples * per_sample / 1e9  # bytes per token held as Python lists (design notes)
    print(f"\nprojection, BELLE-2M ({samples:,} samples x {per_sample} tokens) on a {NODE_CORES}-core node:\n"
          f"  prepare {minutes:.1f} min (serial part + the rest over {NODE_CORES} cores); before: every rank "
          f"~{t_worker / stats['tokens'] * samples * per_sample / 60:.0f} min of one core, on every start\n"
          f"  cache {size['uint16'] / 1e9:.1f} GB with a vocabulary <= 65,536 (LLaMA), {size['int32'] / 1e9:.1f} GB "
          f"above (BELLE-LLaMA-EXT, Qwen2)\n"
          f"  memory per rank: the flat RssAnon above (file pages, shared by a node's ranks); before: ~{lists:.0f} GB "
          f"per rank")


if __name__ == "__main__":
    main()
