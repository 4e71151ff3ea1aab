# Stage 0: make sure each dataset is on disk (download when online; a one-line error with the command when not).


rule fetch_data:
    output:
        ready=WF.data_root + "/.ready/{dataset}",
    log:
        LOGS + "/fetch_data/{dataset}.log",
    benchmark:
        BENCH + "/fetch_data/{dataset}.tsv"
    threads: 1
    params:
        root=WF.data_root,
    shell:
        "{PY} -m harness.cli.fetch_data --dataset {wildcards.dataset} --root {params.root} > {log} 2>&1"
        " && touch {output.ready}"
