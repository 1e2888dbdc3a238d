"""The trainers' benchmarks behind ``bioprop bench rules|train|overhead``: side-by-side
ratios, never timed tests; figures and commands in ``docs/benchmarks.md``. Nothing in the
training library imports them."""
