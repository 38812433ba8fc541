"""report.py's parts: reading runs, grouping them by setting, statistics, tables and plots."""
