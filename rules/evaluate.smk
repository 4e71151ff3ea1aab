# Stage 4: test-split accuracy, MACs and params of each fine-tuned model: one row of runs.csv.


rule evaluate:
    input:
        base_metrics=BASE + "/metrics.json",
        base_model=BASE + "/model.pt",  # its latency, measured beside the pruned model's
        plan=RUN + "/plan.json",
        model=RUN + "/finetuned.pt",
        info=RUN + "/finetune.json",
        ground_truth=ground_truth_input,  # planted archs only (useful_recall)
    output:
        metrics=RUN + "/metrics.json",
    log:
        LOGS + "/evaluate/" + RUN_TAG + ".log",
    benchmark:
        BENCH + "/evaluate/" + RUN_TAG + ".tsv"
    threads: threads_for("evaluate")
    resources:
        **job_resources("evaluate", runtime=20, mem_mb=8000),
    params:
        spec=lambda w: job_spec(WF, w.dataset, w.arch),
        ground_truth=lambda w, input: f" --ground-truth {input.ground_truth}" if input.ground_truth else "",
    shell:
        "{PY} -m harness.cli.evaluate --spec {params.spec:q} --threads {threads} --seed {wildcards.seed}"
        " --base-metrics {input.base_metrics} --plan {input.plan} --model {input.model}"
        " --finetune-info {input.info} --base-model {input.base_model} --out {output.metrics}{params.ground_truth}"
        " > {log} 2>&1"
