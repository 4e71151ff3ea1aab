# Method `l1-global`: Global L1 ranking with per-group normalisation and a per-group maximum prune ratio.
# A new method is this file (with its own name) plus a module that registers it, plus one config line.



rule prune_l1_global:
    input:
        base=BASE + "/model.pt",
    output:
        plan=plan_path("l1-global"),
    log:
        prune_log("l1-global"),
    benchmark:
        prune_benchmark("l1-global")
    threads: threads_for("prune")
    resources:
        **prune_resources("l1-global"),
    params:
        **prune_params("l1-global"),
    shell:
        PRUNE_SHELL
