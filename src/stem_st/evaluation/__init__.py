"""Evaluation: metrics, baselines, clustering agreement, figures and the HTML report."""
