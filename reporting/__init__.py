"""report.py's parts: runs.py reads what each run recorded, grouping.py groups runs by whole
setting and matches retraining runs to their ticket, stats.py holds the intervals, tables.py the
numbers per group and their CSV / markdown forms, plots.py the plots, build.py the pipeline."""
