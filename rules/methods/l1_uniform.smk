# Method `l1-uniform`: L1 filter pruning (Li et al. 2017) with one keep ratio for every group, found by bisection on the budget.
# A new method is this file (with its own name) plus a module that registers it, plus one config line.



rule prune_l1_uniform:
    input:
        base=BASE + "/model.pt",
    output:
        plan=plan_path("l1-uniform"),
    log:
        prune_log("l1-uniform"),
    benchmark:
        prune_benchmark("l1-uniform")
    threads: threads_for("prune")
    resources:
        **prune_resources("l1-uniform"),
    params:
        **prune_params("l1-uniform"),
    shell:
        PRUNE_SHELL
