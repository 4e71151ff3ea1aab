# Stage 6: the paper figures, from the tables only.


localrules:
    figures,


rule figures:
    input:
        TABLES,
    output:
        [report(f, category="Figures") for f in FIGURES],
    log:
        LOGS + "/figures.log",
    benchmark:
        BENCH + "/figures.tsv"
    threads: 1
    resources:
        **job_resources("figures", runtime=10, mem_mb=2000, gpu=False),
    params:
        tables=R + "/tables",
        out=FIG,
        budget=_layer_budget,
    shell:
        "{PY} -m figures --tables {params.tables} --out {params.out} --budget {params.budget} > {log} 2>&1"
