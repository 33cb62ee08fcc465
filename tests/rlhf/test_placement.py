"""PPO placement: node-major ranks from the config, the design's memory table (within 10%), and every bad placement
refused with its fix."""

import json
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from belle.config import ClusterConfig, LoraConfig, ModelConfig, StrategyConfig
from belle.config.roles import RoleConfig, RolesConfig, RolloutConfig
from belle.model.memory import activation_bytes, logit_bytes
from belle.rlhf.placement import ModelSize, placement_lines
from belle.rlhf.planner import plan_placement
from belle.strategy.estimate import memory_per_gpu

CONF = Path(__file__).parents[2] / "conf"
LLAMA_7B = ModelConfig(
    name="llama_7b", vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_layers=32, num_heads=32
)
P, P_SCORE, L = 6_738_415_616, 6_607_347_712, 131_072_000  # LLaMA-7B; with a score head instead of the LM head
LORA_R8 = 32 * 8 * (3 * (4096 + 4096) + 3 * (4096 + 11008))  # r x (in + out): q, k, v, down, gate, up per block
POLICY, SCORE = ModelSize(LLAMA_7B, P, L, P), ModelSize(LLAMA_7B, P_SCORE, L, P_SCORE, score=True)
FULL = {"actor": POLICY, "critic": SCORE, "reference": POLICY, "reward": SCORE}
LORA = {  # no reference: the actor with adapters off serves
    "actor": ModelSize(LLAMA_7B, P, L, LORA_R8),
    "critic": ModelSize(LLAMA_7B, P_SCORE, L, LORA_R8 + 4096, score=True),
    "reward": SCORE,
}
TINY = ModelConfig(name="tiny", vocab_size=4096, hidden_size=128, intermediate_size=344, num_layers=2, num_heads=4)
TINY_RULE = {  # a rule reward, LoRA off: actor and critic only
    "actor": ModelSize(TINY, 4_000_000, 524_288, 4_000_000),
    "critic": ModelSize(TINY, 3_500_000, 524_288, 3_500_000, score=True),
}


def gpus(nodes: int, per_node: int = 8, gpu: str = "A100-80GB") -> ClusterConfig:
    return ClusterConfig(kind="slurm", nodes=nodes, gpus_per_node=per_node, gpu_type=gpu)


def plan(cluster: ClusterConfig, models=FULL, **roles):
    return plan_placement(RolesConfig(**roles), cluster, StrategyConfig(), models, prompt_tokens=512, new_tokens=512)


def totals(placement) -> dict[str, float]:
    return {"+".join(p.roles): p.total for p in placement.pools}


def spans(placement) -> list[str]:
    return [line.split()[2] for line in placement_lines(placement) if line.startswith("  pool")]


# --- LLaMA-7B PPO on 2x8 A100-80GB, 512 + 512 tokens ---------------------------------------------------------------


def test_colocate_all_holds_every_role_on_16_gpus():
    p = plan(gpus(2), layout="colocate_all")
    (pool,) = p.pools
    states = {role: gib for role, _, gib in pool.states}
    assert states == pytest.approx({"actor": 7.55, "critic": 7.41, "reference": 1.27, "reward": 1.26}, rel=0.1)
    assert pool.peak == ("rollout", pytest.approx(12.55 + 8.00, rel=0.1))
    assert pool.total == pytest.approx(40.0, rel=0.1) and p.fits
    assert spans(p) == ["n0-1:0-7"] and pool.ranks[8] == (1, 0)


def test_pairs_put_actor_and_reference_on_one_node_critic_and_reward_on_the_other():
    p = plan(gpus(2), layout="pairs")
    assert totals(p) == pytest.approx({"actor+reference+rollout": 39.2, "critic+reward": 20.0}, rel=0.1)
    assert p.pool_of("critic").peak == ("critic-train", pytest.approx(1.59, rel=0.1))
    assert spans(p) == ["n0:0-7", "n1:0-7"]


def test_separate_gives_each_role_its_pool():
    p = plan(gpus(2), layout="separate")
    assert totals(p) == pytest.approx(
        {"actor+rollout": 37.2, "critic": 31.8, "reference": 10.9, "reward": 9.8}, rel=0.1
    )
    assert [pool.workers for pool in p.pools] == [8, 4, 2, 2]
    assert spans(p) == ["n0:0-7", "n1:0-3", "n1:4-5", "n1:6-7"]
    frozen_z0 = plan(
        gpus(2),
        layout="separate",
        reference=RoleConfig(zero_stage=0, micro_batch=8),
        reward=RoleConfig(zero_stage=0, micro_batch=8),
    )
    assert totals(frozen_z0)["reference"] == pytest.approx(16.7, rel=0.1)
    assert totals(frozen_z0)["reward"] == pytest.approx(15.5, rel=0.1)


def test_separate_with_a_vllm_pool():
    p = plan(gpus(2), layout="separate", rollout=RolloutConfig(engine="vllm"))
    assert totals(p) == pytest.approx(
        {"actor": 33.5, "critic": 31.8, "reference": 10.9, "reward": 9.8, "rollout": 12.55 + 8.0}, rel=0.1
    )
    assert p.pool_of("rollout").capacity == pytest.approx(72.0)
    assert spans(p) == ["n0:0-3", "n0:4-7", "n1:0-1", "n1:2-3", "n1:4-7"]


def test_one_node_and_lora_numbers():
    assert totals(plan(gpus(1), layout="colocate_all"))["actor+critic+reference+reward+rollout"] == pytest.approx(
        55.6, rel=0.1
    )
    a100_40 = gpus(1, gpu="A100-40GB")
    lora = plan(a100_40, LORA, layout="colocate_all")
    assert lora.fits and lora.pools[0].total == pytest.approx(28.7, rel=0.1)
    lean = plan(a100_40, LORA, layout="colocate_all", rollout=RolloutConfig(gather_weights=False))
    assert lean.pools[0].total == pytest.approx(16.7, rel=0.1)


def test_auto_picks_colocate_all_where_it_fits_and_explains_skips():
    p = plan(gpus(2), layout="auto")
    assert p.layout == "colocate_all" and p.requested == "auto"
    assert dict(p.others) == {"pairs": "39.2 GiB/GPU", "separate": "37.2 GiB/GPU"}
    tight = plan(gpus(2, gpu="A100-40GB"), layout="auto")
    assert tight.layout == "pairs"
    assert dict(tight.others)["colocate_all"] == "pool A needs 40.04 of 40 GiB/GPU"
    assert placement_lines(tight)[0].startswith("  roles      auto -> pairs  (colocate_all: pool A needs 40.04")


def test_full_fine_tuning_colocated_on_8_a100_40gb_does_not_fit_and_names_the_fixes():
    with pytest.raises(ValueError) as error:
        plan(gpus(1, gpu="A100-40GB"), layout="colocate_all")
    message = str(error.value)
    assert "\n" not in message and "needs 55.6 GiB per GPU" in message and "rollout 20.55" in message
    for fix in ("roles.rollout.gather_weights=false (43.5 GiB/GPU)", "LoRA (method.lora)", "roles.check_memory=false"):
        assert fix in message
    unchecked = plan(gpus(1, gpu="A100-40GB"), layout="colocate_all", check_memory=False)
    assert unchecked.fits is False and "DOES NOT FIT" in placement_lines(unchecked)[2]
    with pytest.raises(ValueError, match="roles.layout=auto: no layout fits .*roles.check_memory=false"):
        plan(gpus(1, gpu="A100-40GB"), layout="auto")


def test_over_memory_names_the_layouts_that_fit():
    with pytest.raises(ValueError, match=r"needs 40.0 GiB per GPU .*roles.layout=pairs \(39.2 GiB/GPU\), "):
        plan(gpus(2, gpu="A100-40GB"), layout="colocate_all")


# --- named layouts on other clusters --------------------------------------------------------------------------


def test_named_layouts_on_one_node_of_two_cpu_workers():
    cpu = ClusterConfig()
    colocated = plan(cpu, TINY_RULE, layout="colocate_all")
    assert spans(colocated) == ["n0:0-1"] and colocated.fits is None and colocated.pools[0].overhead == 0
    assert spans(plan(cpu, TINY_RULE, layout="pairs")) == ["n0:0", "n0:1"]
    separate = plan(cpu, TINY_RULE, layout="separate")
    assert [p.roles for p in separate.pools] == [("actor", "rollout"), ("critic",)]
    assert "(CPU workers)" in placement_lines(separate)[2]
    assert plan(cpu, TINY_RULE, layout="auto").layout == "colocate_all"


def test_named_layouts_on_2x4_gpus():
    assert spans(plan(gpus(2, 4), layout="colocate_all")) == ["n0-1:0-3"]
    assert spans(plan(gpus(2, 4), layout="pairs")) == ["n0:0-3", "n1:0-3"]
    assert spans(plan(gpus(2, 4), layout="separate")) == ["n0:0-3", "n1:0-1", "n1:2", "n1:3"]
    without_reference = plan(gpus(2, 4), LORA, layout="pairs")
    assert [p.roles for p in without_reference.pools] == [("actor", "rollout"), ("critic", "reward")]


def test_custom_layout_places_roles_as_set():
    cpu3 = ClusterConfig(cpu_workers_per_node=3)
    p = plan(
        cpu3,
        TINY_RULE,
        layout="custom",
        actor=RoleConfig(workers=1, pool="train"),
        critic=RoleConfig(workers=1, pool="train"),
        rollout=RolloutConfig(workers=2, pool="gen"),
    )
    assert [(pool.name, pool.roles, pool.ranks) for pool in p.pools] == [
        ("train", ("actor", "critic"), ((0, 0),)),
        ("gen", ("rollout",), ((0, 1), (0, 2))),
    ]
    assert p.rollout == "hf in its own pool gen" and p.pool_of("rollout").states[0][1] == "Z0-frozen"


def test_plan_json_and_printout():
    p = plan(gpus(2), layout="pairs")
    data = json.loads(json.dumps(p.to_json()))
    assert data["layout"] == "pairs" and data["fits"] is True
    assert data["pools"][1]["ranks"][0] == [1, 0] and len(data["pools"][0]["ranks"]) == 8
    assert data["pools"][0]["phases_gib"]["rollout"] == pytest.approx(20.55, abs=0.01)
    assert placement_lines(p)[1] == (
        "  models     actor+reference llama_7b 6.74B | critic+reward llama_7b+score 6.61B | rollout hf in pool A"
    )
    assert placement_lines(p)[2].startswith(
        "  pool A     n0:0-7  actor 8 Z3-train 14.61 + reference 8 Z3-frozen 2.06 + rollout 20.55 + 2 = 39.2 of 80 GiB"
    )


def test_idle_slots_are_shown():
    p = plan(gpus(2), layout="pairs", rollout=RolloutConfig(engine="vllm", tensor_parallel=2))
    assert spans(p) == ["n0:0-3", "n0:4-7", "n1:0-3"] and placement_lines(p)[-1] == "  idle       n1:4-7"


def test_a_512_node_plan_is_arithmetic():
    start = time.perf_counter()
    p = plan(gpus(512), layout="separate")
    assert time.perf_counter() - start < 1.0
    assert [pool.workers for pool in p.pools] == [2048, 1024, 512, 512]
    assert {node for pool in p.pools for node, _ in pool.ranks} == set(range(512))


# --- bad inputs: one line naming the fix ------------------------------------------------------------------------


def test_more_slots_than_exist_are_shown_per_role():
    with pytest.raises(ValueError) as error:
        plan(
            ClusterConfig(),
            TINY_RULE | {"reference": TINY_RULE["actor"], "reward": TINY_RULE["critic"]},
            layout="separate",
        )
    assert str(error.value) == (
        "roles.layout=separate needs 4 CPU workers (actor+rollout 1, critic 1, reference 1, reward 1) but the "
        "cluster has 2 (1 node(s) x 2): set roles.layout=colocate_all or pairs, or cluster.nodes=2"
    )
    with pytest.raises(
        ValueError,
        match=r"custom needs 24 GPUs \(actor\+reference\+rollout 8, critic 8, reward 8\)"
        r".*lower roles.<role>.workers or share pools",
    ):
        plan(
            gpus(2),
            layout="custom",
            actor=RoleConfig(workers=8, pool="A"),
            reference=RoleConfig(workers=8, pool="A"),
            rollout=RolloutConfig(workers=8, pool="A"),
            critic=RoleConfig(workers=8, pool="B"),
            reward=RoleConfig(workers=8, pool="C"),
        )


def test_a_pool_that_fits_no_node_is_refused():
    with pytest.raises(
        ValueError,
        match=r"pool C \(reward, 3 GPUs\) finds no node with 3 free slots \(free: n0 2, "
        r"n1 2\).*make the pools' workers divide 8",
    ):
        plan(
            gpus(2),
            layout="custom",
            actor=RoleConfig(workers=6, pool="A"),
            reference=RoleConfig(workers=6, pool="A"),
            rollout=RolloutConfig(workers=6, pool="A"),
            critic=RoleConfig(workers=6, pool="B"),
            reward=RoleConfig(workers=3, pool="C"),
        )


def test_colocated_roles_with_unequal_workers_are_refused():
    with pytest.raises(
        ValueError,
        match=r"roles.actor \(8 workers\) and roles.reference \(4\) share pool A: "
        r"colocated roles need equal workers; set roles.reference.workers=8",
    ):
        plan(
            gpus(2),
            layout="custom",
            actor=RoleConfig(workers=8, pool="A"),
            reference=RoleConfig(workers=4, pool="A"),
            rollout=RolloutConfig(workers=8, pool="A"),
            critic=RoleConfig(workers=4, pool="B"),
            reward=RoleConfig(workers=4, pool="B"),
        )


def test_a_pool_splitting_nodes_unevenly_is_refused():
    with pytest.raises(
        ValueError,
        match=r"pool A \(actor\+rollout, 12 GPUs\) splits nodes unevenly: .* whole "
        r"nodes of 8; set its roles' workers to 8 or 16",
    ):
        plan(
            gpus(2),
            LORA,
            layout="custom",
            actor=RoleConfig(workers=12, pool="A"),
            rollout=RolloutConfig(workers=12, pool="A"),
            critic=RoleConfig(workers=2, pool="B"),
            reward=RoleConfig(workers=2, pool="B"),
        )


def test_workers_or_pool_under_a_named_layout_are_refused():
    with pytest.raises(
        ValueError,
        match=r"^roles.critic.workers=4 is derived by roles.layout=pairs: remove it, or "
        r"set roles.layout=custom",
    ):
        RolesConfig(layout="pairs", critic=RoleConfig(workers=4))
    with pytest.raises(ValueError, match=r"roles.rollout.pool=gen is derived by roles.layout=auto"):
        RolesConfig(layout="auto", rollout=RolloutConfig(pool="gen"))


def test_custom_layout_needs_every_present_role_and_no_absent_one():
    with pytest.raises(ValueError, match="set roles.critic.workers and roles.critic.pool"):
        plan(
            gpus(1),
            LORA,
            layout="custom",
            actor=RoleConfig(workers=8, pool="A"),
            rollout=RolloutConfig(workers=8, pool="A"),
        )
    with pytest.raises(
        ValueError, match="roles.reference.workers=8, but this job has no reference: set roles.reference.workers=0"
    ):
        plan(
            gpus(1),
            LORA,
            layout="custom",
            actor=RoleConfig(workers=8, pool="A"),
            critic=RoleConfig(workers=8, pool="A"),
            reference=RoleConfig(workers=8, pool="A"),
        )


def test_rollout_shares_only_the_actors_pool_and_vllm_none():
    roles = {
        "actor": RoleConfig(workers=4, pool="A"),
        "critic": RoleConfig(workers=4, pool="B"),
        "reference": RoleConfig(workers=4, pool="A"),
        "reward": RoleConfig(workers=4, pool="B"),
    }
    with pytest.raises(ValueError, match="roles.rollout.pool=B holds critic, reward but not the actor"):
        plan(gpus(1), layout="custom", rollout=RolloutConfig(workers=4, pool="B"), **roles)
    with pytest.raises(ValueError, match="roles.rollout.engine=vllm shares pool A: vLLM needs a pool of its own"):
        plan(gpus(1), layout="custom", rollout=RolloutConfig(workers=4, pool="A", engine="vllm"), **roles)


def test_tensor_parallel_must_divide_the_rollout_workers():
    with pytest.raises(
        ValueError,
        match=r"roles.rollout.tensor_parallel=4 does not divide the rollout's 2 workers "
        r"under roles.layout=separate: set roles.rollout.tensor_parallel to a divisor of 2",
    ):
        plan(gpus(1), layout="separate", rollout=RolloutConfig(engine="vllm", tensor_parallel=4))
    with pytest.raises(ValueError, match="roles.rollout.tensor_parallel=4 does not divide roles.rollout.workers=6"):
        RolesConfig(layout="custom", rollout=RolloutConfig(engine="vllm", tensor_parallel=4, workers=6))
    with pytest.raises(ValueError, match="roles.rollout.tensor_parallel=2 needs roles.rollout.engine=vllm"):
        RolesConfig(rollout=RolloutConfig(tensor_parallel=2))


def test_vllm_on_cpu_is_refused():
    with pytest.raises(ValueError, match=r"^roles.rollout.engine=vllm needs GPUs .*: set roles.rollout.engine=hf$"):
        plan(ClusterConfig(), TINY_RULE, rollout=RolloutConfig(engine="vllm"))


def test_offload_of_a_replicated_frozen_role_is_refused():
    with pytest.raises(
        ValueError,
        match=r"roles.reference.offload=true needs ZeRO-3 for a frozen role, and "
        r"roles.reference runs ZeRO-0: set roles.reference.zero_stage=3",
    ):
        plan_placement(
            RolesConfig(reference=RoleConfig(offload=True)),
            gpus(1),
            StrategyConfig(zero_stage=2),
            FULL,
            prompt_tokens=512,
            new_tokens=512,
        )


# --- sizes from the model, and the conf group ---------------------------------------------------------------------


def test_model_sizes_come_from_the_architecture():
    assert ModelSize.of(LLAMA_7B) == POLICY
    assert ModelSize.of(LLAMA_7B, score=True) == SCORE
    assert ModelSize.of(LLAMA_7B, score=True, lora=LoraConfig()).trainable == LORA_R8 + 4096


@pytest.mark.parametrize("layout", ["colocate_all", "pairs", "separate", "auto"])
def test_conf_group_files_are_small_overrides(layout):
    node = OmegaConf.merge(OmegaConf.structured(RolesConfig), OmegaConf.load(CONF / "roles" / f"{layout}.yaml"))
    roles = OmegaConf.to_object(node)
    assert roles.layout == layout and roles.actor == RoleConfig() and roles.rollout == RolloutConfig()


def test_working_sets_follow_the_sft_estimate(job):
    """belle.model.memory is the training estimate's accounting: a micro-step costs the same in both plans."""
    for checkpointing in ("true", "false"):
        j = job("+exp=ft_2m", f"strategy.activation_checkpointing={checkpointing}")
        memory, tokens = memory_per_gpu(j, P, P, L), j.strategy.micro_batch * j.data.max_length
        assert memory.activations == activation_bytes(j.model, tokens, j.strategy.activation_checkpointing)
        assert memory.logits == logit_bytes(j.model, tokens, backward=True)
