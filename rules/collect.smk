# Stage 5: every run's metrics.json and plan.json -> tidy tables (runs, summary, kept channels, Markdown).


localrules:
    collect,


rule collect:
    input:
        metrics=RUN_METRICS,
        plans=RUN_PLANS,
        reported=sorted(str(p) for p in Path(workflow.basedir, "results", "reported").glob("*.csv")),
    output:
        runs=report(R + "/tables/runs.csv", category="Tables", caption="../report/runs.rst"),
        summary=report(R + "/tables/summary.csv", category="Tables", caption="../report/summary.rst"),
        kept=R + "/tables/kept_channels.csv",
        reported=R + "/tables/reported.csv",
        search_logs=R + "/tables/search_logs.csv",
        markdown=[R + f"/tables/{tag}.md" for tag in EXPERIMENT_TAGS],
        # the exact configuration the tables came from (all --configfile files merged), in the report zip too
        config=report(R + "/tables/config.yaml", category="Config"),
    log:
        LOGS + "/collect.log",
    benchmark:
        BENCH + "/collect.tsv"
    threads: 1
    resources:
        **job_resources("collect", runtime=10, mem_mb=2000, gpu=False),
    params:
        out=R + "/tables",
        listfile=R + "/tables/.inputs.txt",
        reported=str(Path(workflow.basedir, "results", "reported")),
    run:
        import yaml

        from harness.io import write_text

        Path(params.listfile).parent.mkdir(parents=True, exist_ok=True)
        write_text(output.config, yaml.safe_dump(dict(config), sort_keys=False))
        Path(params.listfile).write_text(
            "--metrics\n" + "\n".join(input.metrics) + "\n--plans\n" + "\n".join(input.plans) + "\n"
        )
        shell(
            "{PY} -m harness.results.collect @{params.listfile} --out {params.out}"
            " --reported {params.reported} > {log} 2>&1"
        )
