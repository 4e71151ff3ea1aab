"""The workflow config: schema validation with one-line errors, and the job specs the rules hand to the CLIs.

The Snakefile calls :func:`load_config` once at parse time, so a bad key, an unknown method, arch or
dataset, a target outside (0, 1) or missing data stops the run before any job starts.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

import yaml

from harness.errors import UserError

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "config" / "schema.yaml"
PRETRAINED = "pretrained"


@dataclass(frozen=True)
class Experiment:
    """One (dataset, arch) pair with its base-training and fine-tuning recipes."""

    dataset: str
    arch: str
    train: str
    finetune: str
    arch_options: Mapping[str, Any] = field(default_factory=dict)
    # The config's methods this experiment runs (None = all of them): lets a preset spend an expensive
    # search on one architecture only.
    methods: tuple[str, ...] | None = None

    def runs_method(self, method: str) -> bool:
        return self.methods is None or method in self.methods


@dataclass(frozen=True)
class BudgetSpec:
    metric: str
    target: float

    @property
    def tag(self) -> str:
        """Path-safe name, e.g. ``macs-0.5``."""
        return budget_tag(self.metric, self.target)


@dataclass(frozen=True)
class WorkflowConfig:
    """The validated config; ``raw`` keeps the dict (with defaults filled) for the job specs."""

    preset: str
    data_root: str
    results_dir: str
    figures_dir: str
    seeds: tuple[int, ...]
    experiments: tuple[Experiment, ...]
    budgets: tuple[BudgetSpec, ...]
    methods: tuple[str, ...]
    raw: Mapping[str, Any]

    def experiment(self, dataset: str, arch: str) -> Experiment:
        for exp in self.experiments:
            if exp.dataset == dataset and exp.arch == arch:
                return exp
        raise KeyError(f"no experiment {dataset}/{arch}")

    def runs(self) -> Iterator[tuple[Experiment, str, BudgetSpec, int]]:
        """Every (experiment, method, budget, seed) of the grid, less the budgets a method cannot meet.

        (An unstructured method such as ``crl-layer`` supports params budgets only: zeroed weights do not
        lower dense MACs. ``load_config`` insists every method has at least one budget it supports.)
        """
        from harness import registry

        for exp in self.experiments:
            for method in self.methods:
                if not exp.runs_method(method):
                    continue
                spec = registry.get_method(method)
                for budget in self.budgets:
                    if not spec.supports(budget.metric):
                        continue
                    for seed in self.seeds:
                        yield exp, method, budget, seed


def budget_tag(metric: str, target: float | str) -> str:
    return f"{metric}-{float(target):g}"


def parse_budget_tag(tag: str) -> BudgetSpec:
    metric, _, target = tag.partition("-")
    return BudgetSpec(metric, float(target))


def _schema() -> dict[str, Any]:
    with open(SCHEMA_PATH, encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def _where(path: Iterator[Any]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<top level>"


def _schema_error_line(error: Any) -> str:
    """Turn a jsonschema error into one line that names the key and the valid values."""
    where = _where(error.absolute_path)
    validator = error.validator
    if validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = [k for k in error.instance if k not in allowed]
        return f"config error at {where}: unknown key {', '.join(map(repr, extra))} (valid keys: {', '.join(allowed)})"
    if validator == "enum":
        return f"config error at {where}: {error.instance!r} is not valid (valid values: {', '.join(map(str, error.validator_value))})"
    if validator == "propertyNames":
        return f"config error at {where}: {error.message}"
    if validator == "required":
        return f"config error at {where}: {error.message}"
    if validator in ("exclusiveMinimum", "exclusiveMaximum", "minimum", "maximum"):
        return f"config error at {where}: {error.instance!r} is out of range ({error.message.split(' is ', 1)[-1]})"
    return f"config error at {where}: {error.message}"


def _fill_defaults(config: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """Fill top-level and one-level-nested defaults declared in the schema."""
    out = dict(config)
    for key, sub in schema.get("properties", {}).items():
        if key not in out and "default" in sub:
            out[key] = sub["default"]
        if sub.get("type") == "object" and "properties" in sub:
            nested = dict(out.get(key) or {})
            for nkey, nsub in sub["properties"].items():
                if nkey not in nested and "default" in nsub:
                    nested[nkey] = nsub["default"]
            out[key] = nested
    return out


def validate_schema(config: Mapping[str, Any]) -> dict[str, Any]:
    """Check the config against config/schema.yaml; raise UserError with one line on the first problem."""
    import jsonschema

    if not isinstance(config, Mapping) or not config:
        raise UserError("config error: the config is empty; pass one with --configfile config/<preset>.yaml")
    schema = _schema()
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(dict(config)), key=lambda e: (len(list(e.absolute_path)), str(e.message)))
    if errors:
        raise UserError(_schema_error_line(errors[0]))
    return _fill_defaults(dict(config), schema)


def load_config(config: Mapping[str, Any], *, check_data: bool = True) -> WorkflowConfig:
    """Validate everything that can be checked without training: schema, names, recipes, options, data."""
    from harness import registry
    from harness.models import known_arch
    from harness.models.planted import PREFIX as PLANTED_PREFIX
    from harness.models.planted import is_planted
    from harness.train import Recipe

    cfg = validate_schema(config)
    registry.load_plugins(tuple(cfg["method_packages"]))
    known = registry.method_names()
    for name, options in cfg["methods"].items():
        if name not in known:
            raise UserError(f"config error at methods: unknown method {name!r} (valid values: {', '.join(known)})")
        registry.options_from_dict(name, options or {})

    recipes = cfg["recipes"]
    for name, recipe in recipes.items():
        try:
            Recipe.from_dict(recipe)
        except UserError as exc:
            raise UserError(f"config error at recipes.{name}: {exc}") from None

    experiments = []
    seen = set()
    for i, item in enumerate(cfg["experiments"]):
        exp = Experiment(
            dataset=item["dataset"], arch=item["arch"], train=item["train"], finetune=item["finetune"],
            arch_options=dict(item.get("arch_options") or {}),
            methods=tuple(item["methods"]) if item.get("methods") is not None else None,
        )
        for name in exp.methods or ():
            if name not in cfg["methods"]:
                raise UserError(f"config error at experiments[{i}].methods: {name!r} is not in methods "
                                f"(valid values: {', '.join(cfg['methods'])})")
        if exp.arch.startswith(PLANTED_PREFIX) and not is_planted(exp.arch):
            raise UserError(
                f"config error at experiments[{i}].arch: {exp.arch!r}: decoys are planted only in CIFAR ResNets "
                "(valid values: planted-resnet20, planted-resnet32, planted-resnet44, planted-resnet56, "
                "planted-resnet110)"
            )
        if not known_arch(exp.arch):
            raise UserError(
                f"config error at experiments[{i}].arch: unknown architecture {exp.arch!r} (valid values: "
                "resnet20, resnet32, resnet44, resnet56, resnet110, vgg16, mobilenetv2, planted-resnetN "
                "(N = 20, 32, 44, 56, 110), torchvision.<name>, timm.<name>)"
            )
        if is_planted(exp.arch):
            from harness.models import planted_options

            try:
                planted_options(exp.arch, dict(exp.arch_options))
            except UserError as exc:
                raise UserError(f"config error at experiments[{i}].arch_options: {exc}") from None
            if exp.train == PRETRAINED:
                raise UserError(f"config error at experiments[{i}].train: {exp.arch} trains its inner network "
                                f"(valid values: {', '.join(sorted(recipes))})")
        for key, recipe in (("train", exp.train), ("finetune", exp.finetune)):
            valid = sorted(recipes) + ([PRETRAINED] if key == "train" else [])
            if recipe not in valid:
                raise UserError(
                    f"config error at experiments[{i}].{key}: unknown recipe {recipe!r} (valid values: {', '.join(valid)})"
                )
        if (exp.dataset, exp.arch) in seen:
            raise UserError(f"config error at experiments[{i}]: {exp.dataset}/{exp.arch} is listed twice")
        seen.add((exp.dataset, exp.arch))
        experiments.append(exp)

    budgets = []
    for item in cfg["budgets"]:
        spec = BudgetSpec(item["metric"], float(item["target"]))
        if spec.tag in {b.tag for b in budgets}:
            raise UserError(f"config error at budgets: {spec.tag} is listed twice")
        budgets.append(spec)
    for name in cfg["methods"]:
        method = registry.get_method(name)
        if not any(method.supports(b.metric) for b in budgets):
            raise UserError(f"config error at methods.{name}: it supports only "
                            f"{', '.join(method.budget_metrics)} budgets and this config has none "
                            "(add one to budgets)")

    layer_budget = (cfg.get("figures") or {}).get("layer_budget")
    if layer_budget is not None:
        tags = [b.tag for b in budgets]
        try:
            layer_tag = parse_budget_tag(layer_budget).tag
        except ValueError:
            layer_tag = layer_budget
        if layer_tag not in tags:
            raise UserError(f"config error at figures.layer_budget: {layer_budget!r} is not a budget of this config "
                            f"(valid values: {', '.join(tags)})")

    wf = WorkflowConfig(
        preset=cfg["preset"],
        data_root=cfg["data_root"],
        results_dir=cfg["results_dir"],
        figures_dir=cfg["figures_dir"],
        seeds=tuple(cfg["seeds"]),
        experiments=tuple(experiments),
        budgets=tuple(budgets),
        methods=tuple(cfg["methods"]),
        raw=cfg,
    )
    check_heldout(wf)
    if check_data:
        check_datasets(wf)
    return wf


def check_heldout(wf: WorkflowConfig) -> None:
    """``prune.heldout_images`` must leave images in every experiment's search split (one-line UserError)."""
    from harness.data.holdout import DEFAULT_HELDOUT_IMAGES

    n = int((wf.raw.get("prune") or {}).get("heldout_images", DEFAULT_HELDOUT_IMAGES))
    for dataset in sorted({exp.dataset for exp in wf.experiments}):
        size = data_config(wf, dataset).search_size
        if n and n >= size:
            raise UserError(f"config error at prune.heldout_images: {n} must be smaller than the search split of "
                            f"{dataset} ({size} images, data.{dataset}.search_size); lower it or set it to 0")


def data_config(wf: WorkflowConfig, dataset: str) -> Any:
    """The harness.data.DataConfig of one dataset, from the config's ``data`` section."""
    from harness.data import DataConfig

    options = dict((wf.raw.get("data") or {}).get(dataset) or {})
    return DataConfig(name=dataset, root=wf.data_root, **options)


def check_datasets(wf: WorkflowConfig) -> None:
    """Missing data: fail before any job, with the fetch command, unless the dataset can download itself."""
    from harness.data import check_available

    for dataset in sorted({exp.dataset for exp in wf.experiments}):
        cfg = data_config(wf, dataset)
        try:
            check_available(cfg)
        except UserError:
            if dataset in ("cifar10", "cifar100") and cfg.download:
                continue  # the fetch_data rule downloads it first, or fails with the same one-line error
            raise


def job_spec(wf: WorkflowConfig, dataset: str, arch: str, **extra: Any) -> str:
    """The JSON the rules pass to ``python -m harness.cli.<stage> --spec``: all a job needs, nothing global."""
    exp = wf.experiment(dataset, arch)
    recipes = wf.raw["recipes"]
    spec = {
        "preset": wf.preset,
        "dataset": dataclasses.asdict(data_config(wf, dataset)),
        "arch": arch,
        "arch_options": dict(exp.arch_options),
        "train_recipe": PRETRAINED if exp.train == PRETRAINED else recipes[exp.train],
        "finetune_recipe": recipes[exp.finetune],
        "prune": dict(wf.raw.get("prune") or {}),
        "evaluate": dict(wf.raw.get("evaluate") or {}),
        "method_packages": list(wf.raw["method_packages"]),
    }
    if "method" in extra:
        spec["method_options"] = dict(wf.raw["methods"].get(extra["method"]) or {})
    spec.update(extra)
    return json.dumps(spec, sort_keys=True)


def check_budgets_reachable(wf: WorkflowConfig) -> None:
    """Reject a budget an architecture cannot reach even when every group keeps only its minimum.

    Built on randomly initialised models (the reachable reduction depends on the architecture alone), so
    it runs before any training.
    """
    import torch

    from harness.data import info_for
    from harness.models import build_model
    from harness.prune import Budget, CostModel, check_reachable, find_groups

    prune = wf.raw.get("prune") or {}
    fraction = float(prune.get("min_keep_fraction", 0.1))
    tolerance = float(prune.get("tolerance", 0.01))
    for exp in wf.experiments:
        info = info_for(data_config(wf, exp.dataset))
        options = {k: v for k, v in exp.arch_options.items() if k != "pretrained"}
        with torch.device("cpu"):
            model = build_model(exp.arch, info, **options).eval()
        example = torch.zeros(1, info.in_channels, info.image_size, info.image_size)
        groups = find_groups(model, example, scope=prune.get("scope", "all"))
        cost = CostModel(model, example, groups)
        for spec in wf.budgets:
            if spec.metric == "latency":  # needs the device's latency table: checked by the prune job itself
                continue
            budget = Budget(spec.metric, spec.target, tolerance=tolerance)
            check_reachable(cost, groups, budget, fraction, arch=f"{exp.dataset}/{exp.arch}")


@dataclass(frozen=True)
class PlantedFeasibility:
    """Whether a budget of a planted experiment can be met while keeping every useful channel."""

    dataset: str
    arch: str
    budget: BudgetSpec
    useful_only_reduction: float  # of the budget's metric, by the plan that keeps exactly the useful channels
    feasible: bool  # a plan keeping every useful channel meets the budget (within the tolerance)


def planted_feasibility(wf: WorkflowConfig) -> list[PlantedFeasibility]:
    """For every planted experiment and budget: can a plan keep all useful channels and meet the budget?

    A budget above the useful-only reduction forces every plan to drop useful channels (useful recall < 1);
    a benchmark wants one budget on each side, but one side alone is not an error. The useful-only
    reduction depends on the shapes only, so it is computed on an untrained planted model, before any job.
    """
    import torch

    from harness.data import info_for
    from harness.models import build_model, planted_options
    from harness.models.planted import is_planted, useful_counts, useful_only_reduction
    from harness.prune import CostModel, find_groups

    tolerance = float((wf.raw.get("prune") or {}).get("tolerance", 0.01))
    out: list[PlantedFeasibility] = []
    for exp in wf.experiments:
        if not is_planted(exp.arch):
            continue
        info = info_for(data_config(wf, exp.dataset))
        opts = planted_options(exp.arch, dict(exp.arch_options))
        with torch.device("cpu"):
            model = build_model(exp.arch, info, **opts).eval()
        example = torch.zeros(1, info.in_channels, info.image_size, info.image_size)
        groups = find_groups(model, example, scope="all")
        cost = CostModel(model, example, groups)
        counts = useful_counts(model, [g.id for g in groups], opts["width"])
        for spec in wf.budgets:
            if spec.metric == "latency":  # device-dependent: no useful-only latency before a table exists
                continue
            reduction = useful_only_reduction(cost, counts, spec.metric)
            out.append(PlantedFeasibility(exp.dataset, exp.arch, spec, reduction,
                                          reduction >= spec.target - tolerance))
    return out


def planted_report(wf: WorkflowConfig) -> list[str]:
    """One line per planted experiment: the useful-only reductions and which budgets keep every useful channel."""
    lines = []
    rows = planted_feasibility(wf)
    for dataset, arch in sorted({(r.dataset, r.arch) for r in rows}):
        mine = [r for r in rows if (r.dataset, r.arch) == (dataset, arch)]
        feasible = [r.budget.tag for r in mine if r.feasible]
        infeasible = [r.budget.tag for r in mine if not r.feasible]
        reductions = ", ".join(sorted({f"{r.budget.metric} {r.useful_only_reduction:.3f}" for r in mine}))
        lines.append(f"planted {dataset}/{arch}: keeping exactly the useful channels removes {reductions}; "
                     f"budgets that can keep every useful channel: {', '.join(feasible) or 'none'}; "
                     f"that cannot: {', '.join(infeasible) or 'none'}")
    return lines
