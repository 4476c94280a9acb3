"""The method comparison the main job runs beside ours: the arms (full retrain, ablations,
baselines), prequential evaluation, bootstrap intervals, and the report (metrics.json,
summary.md, tables, plots, verdicts, staleness)."""
