"""ShopStream serving stage: the Ray Serve application over the checkpoint store.

``app`` (builder + CLI), ``deployments`` (Ingress, Recommender, FraudScorer), ``api`` (the
FastAPI routes, auth and body limit), ``schemas``, ``errors``, ``config``, ``holder`` (hot
swap), ``loading`` + ``predictor`` + ``item_cache`` (a loaded version), ``replica`` (a model
replica without Ray), ``local`` (the same API in one uvicorn process), ``testing`` (versions
for tests and benchmarks). Importing the package does nothing.
"""
