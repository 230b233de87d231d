"""On-device adaptation: activation monitors, retraining, pruning control and validated swaps."""
