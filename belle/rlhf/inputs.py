"""What a PPO job reads, checked on the launching machine before anything starts: the keys it reads (and those it
refuses), each role's model folder, the prompts against the rule reward, and a checkpoint against the placement."""

from pathlib import Path

from belle.config import JobConfig
from belle.config._checks import require
from belle.data.prompts import Prompt, read_prompts
from belle.data.records import DataError


def refuse_unread(job: JobConfig, command_line: set[str]) -> None:
    """Refuse what a PPO job sets but never reads: strategy offload (each role offloads by roles.<role>.offload),
    strategy.micro_batch given on the command line (each role has roles.<role>.micro_batch; the presets' value is
    left alone), launcher.prepare (PPO reads its prompts directly: there is no cache to prepare) and a rollout
    engine that nothing runs yet (vllm: the placement can plan its pool, but rollouts generate with transformers)."""
    s, roles = job.strategy, job.roles
    require(roles.rollout.engine != "vllm",
            "roles.rollout.engine=vllm is not run yet: rollouts generate with transformers (its pool is planned, "
            "nothing starts it): set roles.rollout.engine=hf")
    for key in ("offload_optimizer", "offload_params"):
        require(not getattr(s, key),
                f"strategy.{key}=true is not read by PPO, whose roles offload one by one: set "
                f"strategy.{key}=false (or strategy=zero3) and roles.actor.offload=true roles.critic.offload=true")
    require("strategy.micro_batch" not in command_line,
            f"strategy.micro_batch={s.micro_batch} is not read by PPO, whose roles have micro-batches of their own: "
            f"remove it and set roles.actor.micro_batch={s.micro_batch} roles.critic.micro_batch={s.micro_batch} "
            f"(now {roles.actor.micro_batch} and {roles.critic.micro_batch})")
    require(not job.launcher.prepare,
            "launcher.prepare=true builds a training data cache, but PPO reads its prompts directly and has none: "
            "drop launcher.prepare; launcher.dry_run=true reads and checks them and plans the run")


def check_role_models(job: JobConfig) -> None:
    """Every PPO role's model folder is there; one that starts from a reward model is a reward model with the
    policy's vocabulary and tokenizer."""
    from belle.config.ppo import missing_reward_model, present_roles, role_model_source, scores_from_reward_model
    from belle.model.architecture import check_model_path, check_same_tokenizer
    from belle.model.load import load_tokenizer

    require(missing_reward_model(job) is None, missing_reward_model(job))
    for role in present_roles(job):
        model, key = role_model_source(job, role)
        scoring = scores_from_reward_model(job, role)
        check_model_path(model, key, policy=job.model if scoring else None)
        if scoring and model.path is not None:
            policy_tokenizer = job.model.tokenizer_path or job.model.path or load_tokenizer(job.model).name_or_path
            check_same_tokenizer(model.path, key, policy_tokenizer)


def prompt_source(job: JobConfig, tokenizer) -> list[Prompt]:
    """The prompts of data.path cut to method.ppo.max_prompt_length (belle.data.prompts), refused where the rule
    reward cannot score them."""
    from belle.config.ppo import ppo_settings

    ppo = ppo_settings(job)
    prompts = read_prompts(job.data.path, tokenizer, ppo.max_prompt_length)
    if ppo.reward.source == "rule":
        check_rule_inputs(ppo.reward.rule, [(p.reference, p.where) for p in prompts])
    return prompts


def check_rule_inputs(name: str, references: list[tuple[str | None, str]]) -> None:
    """Refuse prompts that rule ``name`` cannot score (``references``: each prompt's reference answer and
    file:line), naming the first, their count and the fix."""
    from belle.score import rules

    problems = [(where, problem) for reference, where in references
                if (problem := rules.unscorable(name, reference))]
    if problems:
        where, problem = problems[0]
        raise DataError(
            f"{where}: method.ppo.reward.rule={name} cannot score this prompt: {problem} ({len(problems)} of "
            f"{len(references)} prompts are like it): point data.path at {rules.REFERENCE_NEEDS[name]}, or set "
            f"method.ppo.reward.rule=<one of {', '.join(r for r in rules.RULES if r not in rules.REFERENCE_NEEDS)}>"
        )


def check_roles_resume(job: JobConfig, run_dir: Path) -> None:
    """The run's latest checkpoint (if any) resumes on the planned ranks and ZeRO stages, with its frozen model
    folders unchanged (belle.rlhf.state.check_resume)."""
    from belle import checkpoint
    from belle.rlhf.planner import placement_of
    from belle.rlhf.state import check_resume

    folder = checkpoint.latest(run_dir)
    if folder is not None:
        check_resume(job, folder, {role: pool.workers for pool in placement_of(job).pools for role in pool.roles})
