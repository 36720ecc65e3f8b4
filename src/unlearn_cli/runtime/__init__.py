"""Where and how computation runs: the cache of computed results, devices, threads."""
