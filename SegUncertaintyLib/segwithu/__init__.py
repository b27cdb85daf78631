"""SegWithU: a post-hoc uncertainty head on a frozen backbone (network, losses, training, loading)."""
