"""The baseline of bench/launcher_overhead.py: a bare torchrun + DeepSpeed training script, nothing else.

    torchrun --nproc_per_node 2 bench/bare_deepspeed.py OUT.jsonl STEPS

Same tiny model, data rows, DeepSpeed config and micro/global batch as the launcher's demo; appends one JSON line
per optimizer step (step, step_time_s, since_start_s) to OUT.jsonl from rank 0.
"""

import json
import sys
import time

STARTED = time.time()


def main(out: str, steps: int) -> None:
    import deepspeed
    import torch.distributed as dist
    from hydra import compose, initialize_config_module

    from belle.data.dataset import build_sft_samples
    from belle.data.packing import collate, pack
    from belle.model.load import load_tokenizer
    from belle.strategy import grad_accumulation
    from belle.strategy.engine import build_engine
    from launcher.compose import to_job
    from launcher.store import register

    register()
    with initialize_config_module(config_module="launcher.conf", version_base="1.3"):
        job = to_job(compose(config_name="config"))
    deepspeed.init_distributed(dist_backend="gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    tokenizer = load_tokenizer(job.model)
    samples, _ = build_sft_samples(job.data.path, tokenizer, job.data.max_length)
    rows = list(pack(samples, job.data.max_length, tokenizer.pad_token_id))[rank::world]
    engine = build_engine(
        job.model, job.strategy, job.optim, job.method.lora, attention="sdpa", world_size=world, total_steps=steps,
        seed=job.train.seed,
    )
    accumulation, micro = grad_accumulation(job.strategy, world), job.strategy.micro_batch
    position = 0
    for step in range(1, steps + 1):
        began = time.time()
        for _ in range(accumulation):
            batch = collate(rows[position:position + micro])
            position += micro
            loss = engine(**batch, attention_mask=None, use_cache=False).loss
            engine.backward(loss)
            engine.step()
        if rank == 0:
            now = time.time()
            with open(out, "a") as f:
                f.write(json.dumps({"step": step, "step_time_s": now - began, "since_start_s": now - STARTED}) + "\n")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
