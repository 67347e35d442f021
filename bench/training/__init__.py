"""The one training loop, batched per-sample augmentation policies, and classification metrics."""
