"""PPO: the controller, run in the driver; its roles (belle.rlhf.roles) live in pools it reaches through ``RoleCalls``.

Setup (prompts, the roles' world sizes, resume: the controller state restored from the latest checkpoint, which the
roles have loaded themselves) → one step per rollout batch (prompts → the actor's weights to a rollout pool of
its own → generate, each rollout rank reporting its weights version → score, old log-probs, reference log-probs,
values → experience → critic update, then actor update → KL controller, metrics, samples, checkpoint; a
stop request saves and leaves; stop_kl stops cleanly) → export (the actor, as SFT exports).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from belle import checkpoint, rundir, stop
from belle.config import JobConfig
from belle.config.ppo import (
    TRAINED_ROLES,
    ppo_settings,
    present_roles,
    roles_settings,
    zero_stage,
)
from belle.data.facts import DataFacts
from belle.data.prompts import Prompt, PromptStream
from belle.data.template import eos_token_id
from belle.plan import RecipePlan
from belle.recipes import common
from belle.recipes.eval import follow_up  # noqa: F401 (the recipe face)
from belle.rlhf.inputs import check_role_models, check_roles_resume, prompt_source, refuse_unread
from belle.rlhf.state import check_resume, frozen_fingerprints, ppo_steps, prompts_fingerprint, read_controller
from belle.rundir import CONTROLLER, write_atomic

if TYPE_CHECKING:
    from belle.rlhf.calls import RoleCalls

KIND = "driver"
FORMATS = ("prompt",)
SUMMARY = {"reward_mean": "reward_mean", "kl": "kl"}
"""summary.json key → the metrics.jsonl key whose last logged value it holds."""
ACTOR_KEYS = ("input_ids", "attention_mask", "response_mask", "old_log_probs", "advantages")
CRITIC_KEYS = ("input_ids", "attention_mask", "response_mask", "old_values", "returns")


def check(job: JobConfig, command_line: set[str], run_dir: Path) -> None:
    """Keys PPO never reads are refused; unless a dry run, every role's model folder is checked; for a launch, the
    run's latest checkpoint must resume on the placement."""
    refuse_unread(job, command_line)
    if not job.launcher.dry_run:
        check_role_models(job)
    if job.launcher.launches:
        check_roles_resume(job, run_dir)


def phase_timeout(job: JobConfig) -> tuple[float, str]:
    """The bound on each call to the pools (a driver recipe's face), and the key that sets it."""
    return ppo_settings(job).phase_timeout_s, "method.ppo.phase_timeout_s"


def data_facts(job: JobConfig, tokenizer) -> DataFacts:
    """Every prompt is read and checked here (the controller reads them all again when it starts)."""
    prompts = prompt_source(job, tokenizer)
    mean = sum(len(p.ids) for p in prompts) / len(prompts)
    return DataFacts(len(prompts), mean, f"exact: all {len(prompts)} prompts read")


def plan(job: JobConfig, facts: DataFacts, warnings: list[str]) -> RecipePlan:
    """One step per rollout batch of prompts; each role's batch, memory and DeepSpeed config are its pool's in the
    placement (belle.rlhf.planner), which is refused in one line when it does not fit unless
    roles.check_memory=false."""
    from belle.config.ppo import missing_reward_model
    from belle.rlhf.placement import placement_lines
    from belle.rlhf.planner import placement_of

    ppo = ppo_settings(job)
    reward = f"rule {ppo.reward.rule}" if ppo.reward.source == "rule" else "the reward model"
    kl = f"KL {ppo.kl.estimator} x {ppo.kl.coef:g}" + (f", adaptive to {ppo.kl.target:g}" if ppo.kl.target else "")
    updates = ppo.epochs * ppo.sequences // ppo.mini_batch
    step = (f"{ppo.rollout_batch} prompts x {ppo.samples_per_prompt}, <= {ppo.max_prompt_length}+"
            f"{ppo.max_new_tokens} tokens; mini-batch {ppo.mini_batch} x {ppo.epochs} epochs = {updates} actor + "
            f"{updates} critic optimizer steps")
    recipe = {
        "name": "ppo", "kind": KIND, "roles": list(present_roles(job)),
        "trains": f"the actor on the clipped policy loss (clip {ppo.clip:g}) and the critic on the clipped value loss; "
                  f"scores from {reward}, {kl}",
        "step": step,
    }
    missing = missing_reward_model(job)
    if missing:
        warnings.append(f"a launch would be refused: {missing}")
    placement = placement_of(job)
    for role in TRAINED_ROLES:  # every rank of a trained role runs as many micro-batches per mini-batch
        ppo.check_batches(placement.pool_of(role).workers, roles_settings(job).block(role).micro_batch,
                          f"roles.{role}")
    steps_per_epoch = facts.num_samples and facts.num_samples // ppo.rollout_batch
    total_steps = ppo_steps(job, facts.num_samples) if facts.num_samples or job.train.max_steps else None
    lines = placement_lines(placement)
    return RecipePlan(recipe, steps_per_epoch, total_steps, {"placement": placement.to_json() | {"lines": lines}}, [
        f"  step       {step}", *lines,
        f"  schedule   {total_steps or '?'} PPO steps, lr {job.optim.lr:g} {job.optim.schedule}",
    ])


def prepare(job: JobConfig, run_dir: Path | None) -> None:
    """Where a run starts (under Slurm, inside its job): a checkpoint the placement cannot resume is refused before
    any pool starts (the controller reads its prompts itself)."""
    if run_dir is not None:
        check_roles_resume(job, run_dir)


def preview(job: JobConfig, tokenizer) -> tuple[list, list | None, str]:
    """The first launcher.preview prompts as untrained samples (prompt tokens only, cut as PPO cuts them), their
    reference answers when a rule reward reads them, and what the preview shows."""
    from belle.data.template import IGNORE_INDEX, Sample
    from belle.score.rules import REFERENCE_NEEDS

    prompts = prompt_source(job, tokenizer)[: job.launcher.preview]
    samples = [Sample(p.ids, [IGNORE_INDEX] * len(p.ids)) for p in prompts]
    compared = ppo_settings(job).reward.rule in REFERENCE_NEEDS
    return (samples, [p.reference for p in prompts] if compared else None,
            "PPO prompts: none of their tokens is trained, only the responses generated after them")


def train(job: JobConfig, run_dir: Path, roles: RoleCalls) -> dict:
    """Run PPO on the roles behind ``roles``, resuming from the run's latest checkpoint when there is one. Returns
    the controller state: step, prompt cursor, the last reward and KL, and ``stopped`` (why it stopped early)."""
    import torch

    from belle.data.template import pad_id
    from belle.model.load import load_tokenizer
    from belle.rlhf.experience import RunningMoments, token_rewards
    from belle.rlhf.ppo_losses import (
        explained_variance,
        gae,
        kl_controller,
        kl_penalty,
        masked_mean,
        masked_var,
        masked_whiten,
    )
    from belle.score import rules

    run_dir, ppo = Path(run_dir), ppo_settings(job)
    tokenizer = load_tokenizer(job.model)
    pad, eos = pad_id(tokenizer), eos_token_id(tokenizer)
    prompts = prompt_source(job, tokenizer)
    total_steps = ppo_steps(job, len(prompts))
    worlds = {role: roles.world(role) for role in present_roles(job)}
    for role in TRAINED_ROLES:
        ppo.check_batches(worlds[role], roles_settings(job).block(role).micro_batch, f"roles.{role}")
    rule = rules.rule(ppo.reward.rule) if ppo.reward.source == "rule" else None

    # state: the controller's part of the latest checkpoint (the roles loaded theirs in their setup)
    kl_ctl = kl_controller(ppo.kl.coef, ppo.kl.target, ppo.kl.horizon)
    moments = RunningMoments()
    state = {"step": 0, "prompt_cursor": 0, "first_response_length": None, "reward_mean": None, "kl_mean": None,
             "stopped": None}
    frozen, prompted = frozen_fingerprints(job), prompts_fingerprint(job)
    folder = checkpoint.latest(run_dir, on_skip=checkpoint.say_skipped)  # the roles load the same folder, silently
    if folder is not None:
        check_resume(job, folder, worlds, prompts=prompted)
        saved = read_controller(folder)
        state |= {key: saved[key] for key in state}
        kl_ctl.load_state_dict(saved["kl_controller"])
        moments.load_state_dict(saved["reward_moments"])
    start = state["step"]
    stream = PromptStream(len(prompts), job.train.seed, state["prompt_cursor"])
    monitor = common.Monitor(job, run_dir, total_steps, start, "cpu", worlds["actor"])
    _drop_samples_after(run_dir, start)

    def save() -> None:
        """Every trained role saves into checkpoints/step-N/<role>/, then controller.json, then ``latest`` moves."""
        folder = checkpoint.begin(run_dir, state["step"])
        for role in TRAINED_ROLES:
            roles.call(role, "save", folder=str(folder / role), phase="save")
        placed = {role: {"world": world, "zero_stage": zero_stage(job, role)} for role, world in worlds.items()}
        controller = state | {"epoch": stream.epoch, "roles": placed, "frozen": frozen, "prompts": prompted,
                              "kl_controller": kl_ctl.state_dict(), "reward_moments": moments.state_dict()}
        write_atomic(folder / CONTROLLER, json.dumps(controller, indent=2) + "\n")
        checkpoint.commit(run_dir, state["step"], job.train.keep_last)

    def per_row(role: str, method: str, batch: dict, phase: str, **kwargs):
        """``method`` of ``role`` over the batch's rows, each rank its shard → the results in row order."""
        n = len(batch["input_ids"])
        shards = [{key: value[part] for key, value in batch.items()} for part in _rank_rows(n, worlds[role])]
        return torch.cat(roles.call(role, method, shards, phase=phase, **kwargs))[:n]

    for step in range(start + 1, total_steps + 1):
        if stop.requested(run_dir):  # preemption: keep what was trained, then leave without the export
            return common.leave(job, run_dir, state, start, save, monitor)
        times: dict[str, float] = {}

        # (1) prompts, (2) generate: a rollout pool of its own gets the actor's weights first; each rank of the
        # rollout (else of the actor) samples its shard
        chosen = [prompts[i] for i in stream.take(ppo.rollout_batch) for _ in range(ppo.samples_per_prompt)]
        with _timed(times, "sync"):
            own = roles.sync_weights(version=step, bucket_mb=roles_settings(job).rollout.sync_bucket_mb)
        rollout = "rollout" if own else "actor"
        with _timed(times, "generate"):
            shards = [[chosen[i].ids for i in part] for part in _rank_rows(len(chosen), roles.world(rollout))]
            outputs = roles.call(rollout, "generate", shards, phase="generate", step=step)
            generated = _versioned(outputs, step) if own else sum(outputs, [])
        responses, ended = zip(*(_cut(tokens, eos) for tokens in generated[:len(chosen)]), strict=True)
        batch = _pad_batch([p.ids for p in chosen], responses, pad)
        mask, ended = batch["response_mask"], torch.tensor(ended)

        # (3) scores, old and reference log-probs, values
        texts = tokenizer.batch_decode(responses, skip_special_tokens=True)
        with _timed(times, "score"):
            scores = (torch.tensor([rule(text, p.reference) for text, p in zip(texts, chosen, strict=True)])
                      if rule else per_row("reward", "score", batch, "score")).double()
        with _timed(times, "log_probs"):
            old_log_probs = per_row("actor", "log_probs", batch, "log_probs")
        with _timed(times, "reference"):
            reference = (per_row("reference", "log_probs", batch, "reference") if "reference" in worlds
                         else per_row("actor", "log_probs", batch, "reference", adapters=False))
        with _timed(times, "values"):
            values = per_row("critic", "values", batch, "values")

        # (4) experience: per-token KL penalty plus the shaped score at the last token, GAE, whitening
        kl = torch.where(mask, kl_penalty(old_log_probs, reference, ppo.kl.estimator), 0)
        if ppo.reward.normalize:
            moments.update(scores)
        shaped = (moments.normalize(scores) if ppo.reward.normalize else scores).float()
        token_reward = token_rewards(shaped, kl, mask, ended, kl_coef=kl_ctl.coef, clip=ppo.reward.clip,
                                     missing_eos_penalty=ppo.reward.missing_eos_penalty)
        advantages, returns = gae(token_reward, values, mask, ppo.gamma, ppo.lam)
        data = batch | {"old_log_probs": old_log_probs, "old_values": values, "returns": returns,
                        "advantages": masked_whiten(advantages, mask) if ppo.whiten_advantages else advantages}

        # (5) updates: the critic, then (after its warmup) the actor, over global mini-batches
        with _timed(times, "critic"):
            critic_stats = _update(roles, "critic", data, CRITIC_KEYS, ppo, job.train.seed, step)
        actor_stats = {}
        if step > ppo.critic_warmup_steps:
            with _timed(times, "actor"):
                actor_stats = _update(roles, "actor", data, ACTOR_KEYS, ppo, job.train.seed, step)

        # (6) wrap up: metrics, the KL controller, samples, checkpoint, stop checks
        lengths = mask.sum(1).double()
        state["first_response_length"] = state["first_response_length"] or lengths.mean().item()
        record = {
            "step": step, "reward_mean": scores.mean().item(), "reward_std": scores.std().item(),
            "reward_min": scores.min().item(), "reward_max": scores.max().item(),
            "score_norm_mean": shaped.clamp(-ppo.reward.clip, ppo.reward.clip).mean().item(),
            "kl": kl.sum(1).mean().item(), "kl_coef": kl_ctl.coef, **actor_stats, **critic_stats,
            "explained_variance": explained_variance(values, returns, mask).item(),
            "advantage_mean": masked_mean(advantages, mask).item(),
            "advantage_std": masked_var(advantages, mask).sqrt().item(),
            "return_mean": masked_mean(returns, mask).item(),
            "response_length_mean": lengths.mean().item(), "response_length_max": lengths.max().item(),
            "truncated_share": 1 - ended.double().mean().item(),
            "length_drift": lengths.mean().item() / state["first_response_length"],
            "gen_tokens_per_s": lengths.sum().item() / times["generate"], "weights_version": step,
            **{f"time_{phase}_s": seconds for phase, seconds in times.items()},
        }
        for name in ("policy_loss", "value_loss"):
            if name in record:
                common.check_finite(record[name], step)
        kl_ctl.update(record["kl"], len(chosen))
        state |= {"step": step, "prompt_cursor": stream.cursor, "reward_mean": record["reward_mean"],
                  "kl_mean": record["kl"]}
        stopping = ppo.stop_kl is not None and record["kl"] > ppo.stop_kl
        if common.due(job.monitor.log_every, step, total_steps) or stopping:
            monitor.log(record)
            _warn_drift(record)
        if ppo.sample_every and step % ppo.sample_every == 0:
            _write_samples(run_dir, step, chosen, texts, scores)
        if common.due(job.train.save_every, step, total_steps) or stopping:
            save()
        if stopping:
            state["stopped"] = f"KL {record['kl']:.3g} > method.ppo.stop_kl={ppo.stop_kl:g} at step {step}"
            print(state["stopped"], flush=True)
            break

    # export: the actor in Hugging Face format (LoRA: the adapter, and the base/merged model where asked)
    roles.call("actor", "export", folder=str(run_dir / rundir.EXPORT), phase="export")
    monitor.finish()
    return state


def _rank_rows(n: int, world: int) -> list[list[int]]:
    """Row indices of each rank: equal shares (every rank runs as many forward passes, as ZeRO-3 needs), the last
    ones padded with row 0, whose results are dropped."""
    per_rank = -(-n // world)
    order = list(range(n)) + [0] * (per_rank * world - n)
    return [order[rank * per_rank:(rank + 1) * per_rank] for rank in range(world)]


def _versioned(outputs: list[dict], step: int) -> list[list[int]]:
    """Every rollout rank's responses, in rank order; a rank that generated with another step's weights is
    refused."""
    for rank, output in enumerate(outputs):
        if output["version"] != step:
            raise RuntimeError(f"role rollout rank {rank} generated step {step} with weights version "
                               f"{output['version']}: stale weights; sync them first (RoleCalls.sync_weights)")
    return sum((output["responses"] for output in outputs), [])


def _cut(tokens: list[int], eos: int) -> tuple[list[int], bool]:
    """A generated response cut after its first EOS (what follows is padding), and whether it has one."""
    return (tokens[:tokens.index(eos) + 1], True) if eos in tokens else (tokens, False)


def _pad_batch(prompts: list[list[int]], responses: list[list[int]], pad: int) -> dict:
    """The step's batch (belle.rlhf.roles): prompts left-padded, responses right-padded, the response mask."""
    import torch

    from belle.model.generate import left_pad

    batch = left_pad(prompts, pad)
    width = max(len(r) for r in responses)
    ids = torch.full((len(responses), width), pad, dtype=torch.long)
    mask = torch.zeros((len(responses), width), dtype=torch.bool)
    for row, response in enumerate(responses):
        ids[row, :len(response)] = torch.tensor(response, dtype=torch.long)
        mask[row, :len(response)] = True
    return {"input_ids": torch.cat([batch["input_ids"], ids], 1),
            "attention_mask": torch.cat([batch["attention_mask"], mask.long()], 1), "response_mask": mask}


def _update(roles: RoleCalls, role: str, data: dict, keys: tuple[str, ...], ppo, seed: int, step: int) -> dict:
    """``epochs`` passes of ``role`` over the step's sequences in global mini-batches, reshuffled every pass and
    split evenly over the role's ranks → the stats merged over ranks."""
    import torch

    from belle.model.generate import step_seed
    from belle.rlhf.batch import merge

    world, shards, count = roles.world(role), [[] for _ in range(roles.world(role))], 0
    for epoch in range(ppo.epochs):
        order = torch.randperm(len(data["input_ids"]), generator=torch.Generator().manual_seed(
            step_seed(seed, step, epoch)))
        for rows in order.split(ppo.mini_batch):
            tokens = float(data["response_mask"][rows].sum())
            for rank, part in enumerate(rows.tensor_split(world)):
                shards[rank].append({key: data[key][part] for key in keys} | {"tokens": tokens})
            count += 1
    return merge(roles.call(role, "update", shards, phase=role), count)


@contextmanager
def _timed(times: dict[str, float], phase: str) -> Iterator[None]:
    started = time.time()
    yield
    times[phase] = time.time() - started


def _warn_drift(record: dict) -> None:
    """Reward-hacking guards: responses growing to twice their first length, or mostly cut at the limit."""
    if record["length_drift"] > 2 or record["truncated_share"] > 0.5:
        print(f"warning: step {record['step']}: responses are {record['length_drift']:.1f}x their first length, "
              f"{record['truncated_share']:.0%} cut at method.ppo.max_new_tokens: watch for reward hacking", flush=True)


def _write_samples(run_dir: Path, step: int, prompts: list[Prompt], texts: list[str], scores, rows: int = 4) -> None:
    with open(run_dir / rundir.SAMPLES, "a", encoding="utf-8") as f:
        for prompt, text, score in list(zip(prompts, texts, scores.tolist(), strict=True))[:rows]:
            f.write(json.dumps({"step": step, "prompt": prompt.text, "response": text, "score": score},
                               ensure_ascii=False) + "\n")


def _drop_samples_after(run_dir: Path, step: int) -> None:
    """A resumed run first drops the sample rows of steps after its checkpoint (as MetricsLog does)."""
    path = run_dir / rundir.SAMPLES
    if path.is_file():
        kept = [line for line in path.read_text(encoding="utf-8").splitlines() if json.loads(line)["step"] <= step]
        write_atomic(path, "".join(line + "\n" for line in kept))
