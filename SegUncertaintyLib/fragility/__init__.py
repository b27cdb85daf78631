"""Adversarial fragility (fast 3D QUAM-SM).

Where a slightly different, equally good model would draw the contour elsewhere.
"""
