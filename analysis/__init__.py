"""Kuleshov's analysis side: load -> score -> stats -> charts -> report / export."""
