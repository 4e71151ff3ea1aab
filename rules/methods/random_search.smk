# Methods `random-search` and `l1-random-search` (baselines/random_search.py): the control every search method
# must beat. N feasible plans with random per-group keep ratios (channels at random, or by L1: AMC without the
# learning), made feasible by the RL searches' wall, projection and fill, scored by the same search-split
# evaluator; the best is returned. N (`evaluations`) equals the RL methods' episode count in every preset.
# Besides the plan each writes the search log (one row per evaluation: accuracy, MACs, params, best so far).
# Its state is checkpointed in the scratch folder, so a killed search resumes.


rule prune_random_search:
    input:
        base=BASE + "/model.pt",
    output:
        plan=plan_path("random-search"),
        search_log=plan_path("random-search").replace("plan.json", "search_log.csv"),
    log:
        prune_log("random-search"),
    benchmark:
        prune_benchmark("random-search")
    threads: threads_for("prune")
    resources:
        **prune_resources("random-search"),
    params:
        **prune_params("random-search"),
    shell:
        prune_shell("--search-log {output.search_log}")


rule prune_l1_random_search:
    input:
        base=BASE + "/model.pt",
    output:
        plan=plan_path("l1-random-search"),
        search_log=plan_path("l1-random-search").replace("plan.json", "search_log.csv"),
    log:
        prune_log("l1-random-search"),
    benchmark:
        prune_benchmark("l1-random-search")
    threads: threads_for("prune")
    resources:
        **prune_resources("l1-random-search"),
    params:
        **prune_params("l1-random-search"),
    shell:
        prune_shell("--search-log {output.search_log}")
