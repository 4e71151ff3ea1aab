"""Resource-aware pruning benchmark: train bases -> prune (one rule per method) -> fine-tune -> evaluate
-> collect tables -> figures.

    snakemake --cores 8 --resources gpu=4                       # the paper grid (config/paper.yaml)
    snakemake --configfile config/quick.yaml --cores 2          # CPU, offline, Fashion-MNIST
    snakemake -n                                                # the plan
"""
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import min_version

min_version("9.0")

sys.path.insert(0, workflow.basedir)
from harness.config import check_budgets_reachable, check_datasets, job_spec, load_config, parse_budget_tag  # noqa: E402
from harness.config import planted_report  # noqa: E402
from harness.errors import UserError  # noqa: E402
from harness.workflow_lock import release_stale_locks  # noqa: E402

# A killed Snakemake leaves its lock files behind; the same command run again must just work. They are
# removed only when no other run of this workflow is alive in this directory (harness/workflow_lock.py).
if workflow.is_main_process:
    release_stale_locks()


# The paper grid is the default; a --configfile on the command line replaces it (never merged into it,
# so a preset never inherits methods or recipes from the paper grid).
if not workflow.overwrite_configfiles:

    configfile: "config/paper.yaml"


# Parse time (also for -n): the schema, method/arch/dataset names, recipes and method options.
try:
    WF = load_config(config, check_data=False)
except UserError as exc:
    raise WorkflowError(str(exc)) from None


# Before the first job of a real run: the data is on disk (or downloadable) and every budget is reachable.
onstart:
    try:
        check_datasets(WF)
        check_budgets_reachable(WF)
        # planted benchmark: which budgets can keep every useful channel (a note, not an error)
        for _line in planted_report(WF):
            print(_line, file=sys.stderr)
    except UserError as exc:
        raise WorkflowError(str(exc)) from None


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/train.smk"


for _rule_file in sorted(Path(workflow.basedir, "rules", "methods").glob("*.smk")):

    include: str(_rule_file)


include: "rules/finetune.smk"
include: "rules/evaluate.smk"
include: "rules/collect.smk"
include: "rules/figures.smk"


try:
    check_resource_rules([r.name for r in workflow.rules])
except UserError as exc:
    raise WorkflowError(str(exc)) from None


rule all:
    input:
        TABLES,
        FIGURES,
    default_target: True
