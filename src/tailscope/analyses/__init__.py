"""Analyses: the paper's experiments and its reviewers' questions, as functions over a study."""

from tailscope.analyses.base import AnalysisResult

__all__ = ["AnalysisResult"]
