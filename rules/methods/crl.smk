# Methods `crl-neuron` and `crl-layer`: constrained-RL pruning (Malik et al., ICPR 2022; baselines/crl/,
# docs/crl.md). A PPO-Lagrangian agent sweeps the layers; the Lagrange multiplier holds the mean cost (remaining
# size) under the budget, and the plan is the best feasible of several rollouts of the final policy.
# `crl-neuron` keeps channels per dependency group (structured); `crl-layer` zeroes weights by magnitude at
# per-layer fractions (unstructured: non-zero params, dense MACs), so the grid gives it params budgets only.
# Besides the plan each writes the search log (one row per PPO update: reward, mean cost, budget, nu, episode
# accuracy and size). Agent checkpoints live in the scratch folder, so a killed search resumes.


rule prune_crl_neuron:
    input:
        base=BASE + "/model.pt",
    output:
        plan=plan_path("crl-neuron"),
        search_log=plan_path("crl-neuron").replace("plan.json", "search_log.csv"),
    log:
        prune_log("crl-neuron"),
    benchmark:
        prune_benchmark("crl-neuron")
    threads: threads_for("prune")
    resources:
        **prune_resources("crl-neuron"),
    params:
        **prune_params("crl-neuron"),
    shell:
        prune_shell("--search-log {output.search_log}")


rule prune_crl_layer:
    input:
        base=BASE + "/model.pt",
    output:
        plan=plan_path("crl-layer"),
        search_log=plan_path("crl-layer").replace("plan.json", "search_log.csv"),
    log:
        prune_log("crl-layer"),
    benchmark:
        prune_benchmark("crl-layer")
    threads: threads_for("prune")
    resources:
        **prune_resources("crl-layer"),
    params:
        **prune_params("crl-layer"),
    shell:
        prune_shell("--search-log {output.search_log}")
