"""`unlearn protect` as a library: plan, prepare, match, optimise, write, manifest; one job a
module, driven by ``run.protect``."""
