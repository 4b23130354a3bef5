"""`rlmtl compare`: methods x seeds x settings, run locally or on SLURM, resumable, with rliable's statistics.

spec.py (the YAML spec) -> runs.py (run names, configs, states, locks) -> local.py / slurm.py (launchers)
-> job.py (one run) -> report.py and statistics.py (results.json, results.md, the figure);
comparison.py ties them together (`run_comparison`).
"""
