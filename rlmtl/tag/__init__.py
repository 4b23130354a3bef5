"""TAG (Fifty et al., NeurIPS 2021, arXiv 2109.04617): the inter-task affinity probe (probe.py),
the task-grouping search (grouping.py), its artifacts (report.py) and grouped runs (grouped.py)."""
