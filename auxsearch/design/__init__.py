"""Layer 1, torch-free: what a design is. Aux family specs, the task table, block graphs, search spaces.

Imports only the base modules (``errors``, ``config``, ``pareto``) and itself.
"""
