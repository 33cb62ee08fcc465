"""The whole job: one typed section per config group, composed by Hydra from conf/."""

from dataclasses import dataclass, field

from omegaconf import MISSING

from belle.config._checks import require
from belle.config.cluster import ClusterConfig
from belle.config.data import DataConfig
from belle.config.evaluate import EvalConfig
from belle.config.hardware import PRE_AMPERE
from belle.config.method import DATA_FORMATS, EVALUATED_AFTER, SCORED_WHILE_TRAINING, MethodConfig
from belle.config.model import ModelConfig
from belle.config.optim import OptimConfig
from belle.config.paths import path_field
from belle.config.roles import RolesConfig
from belle.config.run import MonitorConfig, TrainConfig
from belle.config.strategy import StrategyConfig


@dataclass
class LauncherConfig:
    name: str = "demo"
    """Run name; also names the default run directory."""
    run_dir: str = path_field("runs/${launcher.name}")
    """Run directory (relative paths are under the directory the command was started in); reusing it resumes."""
    dry_run: bool = False
    """Validate and write plan.json + config.yaml, start nothing."""
    preview: int = 0
    """Render this many training samples as the model sees them (preview.jsonl), start nothing."""
    prepare: bool = False
    """Prepare the data cache (check, tokenize, pack; see data.cache_dir), print its numbers, train nothing."""

    @property
    def launches(self) -> bool:
        """Whether this command starts training (neither a dry run, a preview nor a prepare)."""
        return not self.dry_run and not self.preview and not self.prepare

    def __post_init__(self) -> None:
        require(bool(self.name.strip()), "launcher.name is empty: set launcher.name=<run name>")
        require(self.preview >= 0, f"launcher.preview={self.preview} must be >= 0: set launcher.preview=5")


@dataclass
class ReferenceConfig:
    hours_per_epoch: float | None = None
    """Hours per epoch the paper reports for this experiment, shown next to the plan's estimate."""
    hardware: str | None = None
    """Hardware of that measurement, e.g. 8xA100-40GB."""
    score: float | None = None
    """The paper's score of the model this experiment trains (BELLE's eval set, judged by ChatGPT), shown beside ours
    by launcher.compare."""
    source: str | None = None
    """Where the numbers come from."""


_EXAMPLE_DATA = {
    "sft": "sample", "pretrain": "sample_pretrain", "preference": "sample_preference", "dpo": "sample_dpo",
    "prompt": "sample_prompts", "eval": "sample_eval",
}
"""A bundled data group of each format, named in the method/format error."""


@dataclass
class JobConfig:
    model: ModelConfig = MISSING
    data: DataConfig = MISSING
    method: MethodConfig = field(default_factory=MethodConfig)
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    monitor: MonitorConfig = field(default_factory=MonitorConfig)
    launcher: LauncherConfig = field(default_factory=LauncherConfig)
    reference: ReferenceConfig = field(default_factory=ReferenceConfig)
    roles: RolesConfig | None = None
    """Where PPO's roles run (roles=colocate_all|pairs|separate|custom|auto); None for every other method."""
    eval: EvalConfig | None = None
    """How method=eval scores its answers (method=eval sets it); None for every other method."""

    def __post_init__(self) -> None:
        """The checks that span sections (each section checks itself in its own __post_init__)."""
        m, d, s, c = self.model, self.data, self.strategy, self.cluster
        reads = DATA_FORMATS[self.method.name]
        require(
            d.format in reads,
            f"method.name={self.method.name} reads data.format={' or '.join(reads)} records, but data={d.name} is "
            f"data.format={d.format}: set data={_EXAMPLE_DATA[reads[0]]} (or other {reads[0]} data), or "
            f"method.name={next(k for k, v in DATA_FORMATS.items() if d.format in v)}",
        )
        self._check_eval()
        ppo = self.method.ppo
        require(
            self.roles is None or ppo is not None,
            f"roles places PPO's roles, but method.name={self.method.name}: remove the roles override (or set "
            "method=ppo)",
        )
        require(
            not (ppo is not None and d.pack),
            "method.name=ppo samples one response per prompt row, never packed: set data.pack=false",
        )
        require(
            not (d.pairs and d.pack),
            f"method.name={self.method.name} trains on one (chosen, rejected) pair per row, never packed: "
            "set data.pack=false",
        )
        require(
            self.method.dpo is None or self.method.dpo.max_prompt_length < d.max_length,
            f"method.dpo.max_prompt_length={self.method.dpo and self.method.dpo.max_prompt_length} leaves no room for "
            f"the response in data.max_length={d.max_length}: set method.dpo.max_prompt_length={d.max_length // 4}",
        )
        require(
            d.max_length <= m.max_position_embeddings,
            f"data.max_length={d.max_length} exceeds model.max_position_embeddings={m.max_position_embeddings} "
            f"of {m.name}: set data.max_length={m.max_position_embeddings}",
        )
        generate = self.method.generate
        require(
            generate is None or d.max_length + generate.max_new_tokens <= m.max_position_embeddings,
            f"data.max_length={d.max_length} prompt tokens + method.generate.max_new_tokens="
            f"{generate and generate.max_new_tokens} exceed model.max_position_embeddings={m.max_position_embeddings}"
            f" of {m.name}: lower data.max_length or method.generate.max_new_tokens",
        )
        if ppo is not None:  # PPO's sizes left to the job are filled in here, so config.yaml records them
            self.roles = self.roles or RolesConfig()
            ppo.resolve(s.global_batch, d.max_length, self.roles.actor.micro_batch, c.world_size)
            ppo.check_lengths(m)
        require(
            s.precision != "fp16" or c.use_gpu,
            "strategy.precision=fp16 needs GPU workers (DeepSpeed has no fp16 kernels on CPU): "
            "set strategy.precision=bf16 or cluster.gpus_per_node=<GPUs per node>",
        )
        require(
            not (c.use_gpu and c.gpu_type in PRE_AMPERE and s.precision == "bf16"),
            f"cluster.gpu_type={c.gpu_type} has no bf16: set strategy.precision=fp16 (or fp32), or a newer GPU type",
        )
        require(
            not (m.arch == "bloom" and d.pack and d.format == "sft"),
            "BLOOM cannot keep packed samples apart (ALiBi attention takes no position ids, so samples in a row "
            "would attend to each other): set data.pack=false",
        )


    def _check_eval(self) -> None:
        """method=eval reads its eval section with data.path and method.generate; a training job of a causal LM
        may carry one (with eval.data) to evaluate its export when it completes; no other job reads one."""
        e, name = self.eval, self.method.name
        answering = self.method.generate if name == "eval" else e and e.generate
        key = "method.generate" if name == "eval" else "eval.generate"
        require(answering is None or answering.num_samples == 1,
                f"{key}.num_samples={answering and answering.num_samples}: an evaluation scores one answer per item: "
                f"set {key}.num_samples=1")
        if name == "eval":
            require(e is not None, "method.name=eval needs its eval section: set method=eval")
            require(e.data is None and e.generate is None,
                    "eval.data and eval.generate are read by a training job's closing evaluation; method=eval reads "
                    "its eval set from data.path and its settings from method.generate: set those instead")
        elif e is not None:
            require(name in EVALUATED_AFTER,
                    f"the eval section evaluates a causal LM's export, but method.name={name} exports "
                    f"{'a reward model' if name == 'rm' else 'none'}: remove the eval overrides")
            require(e.data is not None,
                    "the eval section of a training job evaluates its export on eval.data: set eval.data=<an eval "
                    "set in BELLE's format> (or eval=sample for the bundled stand-in)")
        require(self.train.eval_generate_every is None or e is None or e.generate is None
                or e.generate.engine == "hf",
                "train.eval_generate_every answers with the model being trained: set eval.generate.engine=hf")
        require(self.train.eval_generate_every is None or (e is not None and name in SCORED_WHILE_TRAINING),
                f"train.eval_generate_every scores the eval section's set while {name} trains, but "
                + (f"method.name={name} does not answer prompts while it trains: set train.eval_generate_every=null"
                   if name not in SCORED_WHILE_TRAINING else "the job has none: add eval=sample (or eval.data=…)"))


def job_dict(job: JobConfig) -> dict:
    """Plain, fully resolved dict of a job (what config.yaml and the W&B config hold)."""
    from omegaconf import OmegaConf

    return OmegaConf.to_container(OmegaConf.structured(job), resolve=True)
