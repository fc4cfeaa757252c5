"""Layer 3: a design built into an ``nn.Module`` and its local training step (``engine``, ``precision``)."""
