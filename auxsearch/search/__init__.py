"""Layer 6: the search. A study file prepared, samplers, pruning rules, one trial's objective, the
optimisation loop around it, worker supervision and confirmation with fresh seeds."""
