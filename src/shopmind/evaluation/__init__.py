"""Evaluation: full-ranking metrics, the published protocols, benchmark runs and reports."""
