"""Kuleshov's study side: the study file, instruments, stimuli, design, flow and the store.

Nothing in this package imports streamlit or `analysis`.
"""

__version__ = "0.1.0"
