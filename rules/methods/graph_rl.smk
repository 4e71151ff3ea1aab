# Method `graph-rl`: the paper's method (method/): a GATv2 policy over the layer/channel graph takes binary
# keep/prune actions in a constrained MDP with a self-competition reward, trained with PPO.
# Besides the plan it writes the search log (one row per episode: reward, accuracy, MACs, params, best so far,
# projection size, wall time). Its agent checkpoints live in the scratch folder, so a killed search resumes.


rule prune_graph_rl:
    input:
        base=BASE + "/model.pt",
    output:
        plan=plan_path("graph-rl"),
        search_log=plan_path("graph-rl").replace("plan.json", "search_log.csv"),
    log:
        prune_log("graph-rl"),
    benchmark:
        prune_benchmark("graph-rl")
    threads: threads_for("prune")
    resources:
        **prune_resources("graph-rl"),
    params:
        **prune_params("graph-rl"),
    shell:
        prune_shell("--search-log {output.search_log}")
