# Method `amc`: AMC (He et al., ECCV 2018; baselines/amc/): a DDPG agent walks the prunable groups layer by
# layer and sets each one's preserve ratio under an action wall that keeps the MACs/params budget reachable;
# reward = search-split top-1 without fine-tuning. Besides the plan it writes the search log (one row per
# episode: reward, accuracy, MACs, params, sigma, best so far, evaluation and episode time). Its agent and
# replay-buffer checkpoints live in the scratch folder, so a killed search resumes. Decisions: docs/amc.md.


rule prune_amc:
    input:
        base=BASE + "/model.pt",
    output:
        plan=plan_path("amc"),
        search_log=plan_path("amc").replace("plan.json", "search_log.csv"),
    log:
        prune_log("amc"),
    benchmark:
        prune_benchmark("amc")
    threads: threads_for("prune")
    resources:
        **prune_resources("amc"),
    params:
        **prune_params("amc"),
    shell:
        prune_shell("--search-log {output.search_log}")
