"""Scoring a model on a window: metrics for both tasks, baselines, intervals, calibration."""
