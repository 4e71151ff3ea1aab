# Paths, wildcard constraints and the shared pieces of the method rules.
import re

from harness import registry

PY = sys.executable
R = WF.results_dir
FIG = WF.figures_dir

BASE = R + "/base/{dataset}/{arch}/seed{seed}"
RUN = R + "/runs/{dataset}/{arch}/{method}/{metric}-{target}/seed{seed}"
LOGS = R + "/logs"
BENCH = R + "/benchmarks"
CKPT = R + "/checkpoints"
RUN_TAG = "{dataset}/{arch}/{method}/{metric}-{target}/seed{seed}"


def _alternatives(names):
    return "|".join(re.escape(n) for n in sorted(set(names)))


wildcard_constraints:
    dataset=_alternatives(e.dataset for e in WF.experiments),
    arch=_alternatives(e.arch for e in WF.experiments),
    method=_alternatives(registry.method_names()),  # every registered method (load_config loaded them)
    metric="macs|params|latency",
    target=r"0\.[0-9]+|1e-[0-9]+|[0-9]\.[0-9]+e-[0-9]+",
    seed=r"[0-9]+",


# The planted-ground-truth benchmark (harness/models/planted.py): its bases are trained by train_planted_base,
# which also writes ground_truth.json beside the model; the other archs' by train_base. Disjoint per-rule
# arch constraints keep the two unambiguous ("(?!)" matches nothing).
from harness.models.planted import is_planted

PLANTED_ARCHS = sorted({e.arch for e in WF.experiments if is_planted(e.arch)})
PLAIN_ARCHS = sorted({e.arch for e in WF.experiments if not is_planted(e.arch)})


def arch_constraint(archs):
    return _alternatives(archs) if archs else "(?!)"


def ground_truth_input(wildcards):
    """evaluate's optional input: the base's ground_truth.json for a planted arch, nothing otherwise."""
    if not is_planted(wildcards.arch):
        return []
    return [BASE.format(dataset=wildcards.dataset, arch=wildcards.arch, seed=wildcards.seed) + "/ground_truth.json"]


def threads_for(stage):
    return int((WF.raw.get("threads") or {}).get(stage, 1))


def _resources_of(rule_name):
    """The config's `resources:` entry of a rule over its `default` entry (config/schema.yaml)."""
    table = WF.raw.get("resources") or {}
    return {**(table.get("default") or {}), **(table.get(rule_name) or {})}


def runtime_for(rule_name, default):
    return int(_resources_of(rule_name).get("runtime", default))


def mem_for(rule_name, default):
    return int(_resources_of(rule_name).get("mem_mb", default))


def job_resources(rule_name, *, runtime, mem_mb, gpu=True):
    """A rule's `resources:`: runtime (minutes) and memory (MB) from the config, else the rule's defaults.

    A GPU rule asks for one GPU (`gpu=1`: local runs count it against `--resources gpu=N`, the SLURM
    plugin submits `--gpus=1`, the Kubernetes plugin requests one device) and takes from the config the
    keys a cluster executor reads: `gpu_model` and `cpus_per_gpu` (SLURM; `cpus_per_gpu` defaults to the
    rule's threads) and `gpu_manufacturer` (Kubernetes). Only GPU rules get them, so a `default:`
    GPU model never turns a CPU job into a GPU job."""
    spec = _resources_of(rule_name)
    res = dict(runtime=runtime_for(rule_name, runtime), mem_mb=mem_for(rule_name, mem_mb))
    if gpu:
        res["gpu"] = 1
        res["cpus_per_gpu"] = spec.get("cpus_per_gpu") or (lambda wildcards, threads: threads)
        for key in ("gpu_model", "gpu_manufacturer"):
            if spec.get(key):
                res[key] = spec[key]
    return res


def check_resource_rules(rule_names):
    """Bad input: a `resources:` key that names no rule of the workflow (a typo would be ignored)."""
    known = set(rule_names) | {"default"}
    for key in WF.raw.get("resources") or {}:
        if key not in known:
            valid = ", ".join(sorted(known - {"all"}))
            raise UserError(f"resources.{key}: no rule of that name (valid values: {valid})")


def _run_of(method):
    return RUN_TAG.replace("{method}", method)


def plan_path(method):
    """The plan every method rule writes; method rules fill in their own name."""
    return RUN.replace("{method}", method) + "/plan.json"


def prune_log(method):
    return LOGS + "/prune/" + _run_of(method) + ".log"


def prune_benchmark(method):
    return BENCH + "/prune/" + _run_of(method) + ".tsv"


def prune_resources(method):
    return job_resources("prune_" + method.replace("-", "_"), runtime=30, mem_mb=8000)


def prune_params(method):
    return dict(
        spec=lambda w: job_spec(WF, w.dataset, w.arch, method=method),
        method=method,
        scratch=CKPT + "/prune/" + _run_of(method),
    )


def prune_shell(extra=""):
    """The shell command every method rule runs: harness.cli.prune looks the method up in the registry.
    ``extra`` adds arguments, e.g. ``--search-log {output.search_log}`` for methods that log a search."""
    return (
        "{PY} -m harness.cli.prune --spec {params.spec:q} --threads {threads} --method {params.method}"
        " --metric {wildcards.metric} --target {wildcards.target} --seed {wildcards.seed}"
        " --base {input.base} --out {output.plan} --workdir {params.scratch} " + extra + " > {log} 2>&1"
    )


PRUNE_SHELL = prune_shell()


def grid_runs():
    for exp, method, budget, seed in WF.runs():
        yield dict(dataset=exp.dataset, arch=exp.arch, method=method, metric=budget.metric,
                   target=f"{budget.target:g}", seed=seed)


RUN_METRICS = [RUN.format(**r) + "/metrics.json" for r in grid_runs()]
RUN_PLANS = [RUN.format(**r) + "/plan.json" for r in grid_runs()]
EXPERIMENT_TAGS = [f"{e.dataset}_{e.arch}" for e in WF.experiments]
TABLES = [R + "/tables/runs.csv", R + "/tables/summary.csv", R + "/tables/kept_channels.csv", R + "/tables/reported.csv",
          R + "/tables/search_logs.csv", R + "/tables/config.yaml"] + [
    R + f"/tables/{tag}.md" for tag in EXPERIMENT_TAGS
]
_figure_budget = (WF.raw.get("figures") or {}).get("layer_budget")
# The kept-channels figure is drawn at one budget: the configured one, else the MACs budget closest to 0.5.
_layer_budget = parse_budget_tag(_figure_budget).tag if _figure_budget else min(
    (b.tag for b in WF.budgets), key=lambda t: (t.split("-")[0] != "macs", abs(float(t.split("-")[1]) - 0.5))
)
from figures.crl import CRL_METHODS  # the methods figures/crl.py draws (render_all writes crl_<tag> for them)

_latency = bool((WF.raw.get("evaluate") or {}).get("latency", True))  # measured latency rows: one more figure
FIGURES = [FIG + f"/accuracy_vs_macs_{tag}.{ext}" for tag in EXPERIMENT_TAGS for ext in ("png", "pdf")] + [
    FIG + f"/accuracy_vs_latency_{tag}.{ext}" for tag in (EXPERIMENT_TAGS if _latency else []) for ext in ("png", "pdf")
] + [
    FIG + f"/kept_channels_{tag}_{_layer_budget}.{ext}" for tag in EXPERIMENT_TAGS for ext in ("png", "pdf")
] + [
    FIG + f"/l1_overlap_{tag}_{_layer_budget}.{ext}" for tag in EXPERIMENT_TAGS for ext in ("png", "pdf")
] + [
    # search curves for the experiments that run at least one method that logs its search
    FIG + f"/{kind}_{tag}.{ext}" for tag in sorted({f"{e.dataset}_{e.arch}" for e, m, _, _ in WF.runs()
                                                    if registry.get_method(m).search_log})
    for kind in ("search", "search_efficiency") for ext in ("png", "pdf")
] + [
    # the constrained-RL multiplier and cost figure for the experiments that run crl-neuron or crl-layer
    FIG + f"/crl_{tag}.{ext}" for tag in sorted({f"{e.dataset}_{e.arch}" for e, m, _, _ in WF.runs()
                                                 if m in CRL_METHODS})
    for ext in ("png", "pdf")
] + [
    # the planted benchmark: useful recall and accuracy per method and budget (figures/planted.py)
    FIG + f"/planted_{tag}.{ext}" for tag in sorted({f"{e.dataset}_{e.arch}" for e in WF.experiments
                                                     if is_planted(e.arch)})
    for ext in ("png", "pdf")
]
