"""Layer 4: training a design on its data; peak memory (measured, simulated, floor); trial isolation."""
