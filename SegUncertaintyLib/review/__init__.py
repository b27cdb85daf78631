"""Reviewing a segmentation region by region: the high-risk regions, worst first."""
