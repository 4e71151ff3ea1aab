# Method `random`: Random channels at l1-uniform's per-group ratios: the floor every method must beat.
# A new method is this file (with its own name) plus a module that registers it, plus one config line.



rule prune_random:
    input:
        base=BASE + "/model.pt",
    output:
        plan=plan_path("random"),
    log:
        prune_log("random"),
    benchmark:
        prune_benchmark("random")
    threads: threads_for("prune")
    resources:
        **prune_resources("random"),
    params:
        **prune_params("random"),
    shell:
        PRUNE_SHELL
