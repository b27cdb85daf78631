"""Scoring uncertainty methods side by side against multiple raters (``seguncertainty evaluate``)."""
