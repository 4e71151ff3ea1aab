# Stage 0: make sure each dataset is on disk (download when online; a one-line error with the command when not).
# On a cluster it runs where Snakemake runs (the login node): compute nodes are often offline.


localrules:
    fetch_data,


rule fetch_data:
    output:
        ready=WF.data_root + "/.ready/{dataset}",
    log:
        LOGS + "/fetch_data/{dataset}.log",
    benchmark:
        BENCH + "/fetch_data/{dataset}.tsv"
    threads: 1
    resources:
        **job_resources("fetch_data", runtime=60, mem_mb=2000, gpu=False),
    params:
        root=WF.data_root,
    shell:
        "{PY} -m harness.cli.fetch_data --dataset {wildcards.dataset} --root {params.root} > {log} 2>&1"
        " && touch {output.ready}"
