# Stage 3: the same fine-tune recipe for every method's plan.


rule finetune:
    input:
        base=BASE + "/model.pt",
        plan=RUN + "/plan.json",
    output:
        model=RUN + "/finetuned.pt",
        info=RUN + "/finetune.json",
        log_csv=RUN + "/finetune_log.csv",
    log:
        LOGS + "/finetune/" + RUN_TAG + ".log",
    benchmark:
        BENCH + "/finetune/" + RUN_TAG + ".tsv"
    threads: threads_for("finetune")
    resources:
        **job_resources("finetune", runtime=60, mem_mb=8000),
    params:
        spec=lambda w: job_spec(WF, w.dataset, w.arch),
        ckpt=CKPT + "/finetune/" + RUN_TAG,
    shell:
        "{PY} -m harness.cli.finetune --spec {params.spec:q} --threads {threads} --seed {wildcards.seed}"
        " --base {input.base} --plan {input.plan} --out {output.model} --info {output.info}"
        " --log-csv {output.log_csv} --checkpoint-dir {params.ckpt} > {log} 2>&1"
