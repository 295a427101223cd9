"""Experiments built on scoring: each module runs one study and writes tables and plots."""
