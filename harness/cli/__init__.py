"""Command-line entry points that the Snakemake rules call: ``python -m harness.cli.<stage>``."""
