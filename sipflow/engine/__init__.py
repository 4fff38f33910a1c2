"""Runners of the per-source stage and the merge onto one timeline."""
