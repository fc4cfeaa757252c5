"""Layer 5, torch-free: where a study lives. Storage URLs, the typed trial record, heartbeats and
stale-trial reaping, the guarded journal file; the only place that may touch Optuna's internals
(``store.optuna_adapter``)."""
