# Stage 1: the dense base model per (dataset, arch, seed). Checkpoints live under results/checkpoints/,
# outside the declared outputs, so a killed job resumes where it stopped when the DAG is run again.


rule train_base:
    input:
        ready=WF.data_root + "/.ready/{dataset}",
    output:
        model=BASE + "/model.pt",
        metrics=BASE + "/metrics.json",
        log_csv=BASE + "/train_log.csv",
    wildcard_constraints:
        arch=arch_constraint(PLAIN_ARCHS),
    log:
        LOGS + "/train_base/{dataset}/{arch}/seed{seed}.log",
    benchmark:
        BENCH + "/train_base/{dataset}/{arch}/seed{seed}.tsv"
    threads: threads_for("train")
    resources:
        **job_resources("train_base", runtime=60, mem_mb=8000),
    params:
        spec=lambda w: job_spec(WF, w.dataset, w.arch),
        ckpt=CKPT + "/base/{dataset}/{arch}/seed{seed}",
    shell:
        "{PY} -m harness.cli.train_base --spec {params.spec:q} --threads {threads} --seed {wildcards.seed}"
        " --out {output.model} --metrics {output.metrics} --log-csv {output.log_csv}"
        " --checkpoint-dir {params.ckpt} > {log} 2>&1"


if PLANTED_ARCHS:

    # A planted arch: the same training of its inner ResNet, then the decoys are planted (function unchanged)
    # and the ground truth (useful channels per group) is written beside the model. Same logs, benchmarks,
    # checkpoints and `resources: train_base` as train_base.
    rule train_planted_base:
        input:
            ready=WF.data_root + "/.ready/{dataset}",
        output:
            model=BASE + "/model.pt",
            metrics=BASE + "/metrics.json",
            log_csv=BASE + "/train_log.csv",
            ground_truth=BASE + "/ground_truth.json",
        wildcard_constraints:
            arch=arch_constraint(PLANTED_ARCHS),
        log:
            LOGS + "/train_base/{dataset}/{arch}/seed{seed}.log",
        benchmark:
            BENCH + "/train_base/{dataset}/{arch}/seed{seed}.tsv"
        threads: threads_for("train")
        resources:
            **job_resources("train_base", runtime=60, mem_mb=8000),
        params:
            spec=lambda w: job_spec(WF, w.dataset, w.arch),
            ckpt=CKPT + "/base/{dataset}/{arch}/seed{seed}",
        shell:
            "{PY} -m harness.cli.train_base --spec {params.spec:q} --threads {threads} --seed {wildcards.seed}"
            " --out {output.model} --metrics {output.metrics} --log-csv {output.log_csv}"
            " --checkpoint-dir {params.ckpt} --ground-truth {output.ground_truth} > {log} 2>&1"
