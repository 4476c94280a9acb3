"""ShopStream tuning stage: Ray Tune sweeps whose best config feeds ``training.incremental``.

``tuning.space`` (what is searched), ``tuning.config`` (how the sweep runs),
``tuning.trial`` (what one trial trains and scores), ``tuning.tuner`` (the Tune run),
``tuning.report`` (table, Pareto front, plot, best.json) and ``tuning.sweep`` (the job).
"""
