"""ShopStream serving stage: the Ray Serve application over the checkpoint store.

``app`` (builder + CLI), ``deployments`` (ShopStream fused; split: Ingress, Recommender,
FraudScorer), ``api`` (the FastAPI routes, auth and body limit), ``schemas``, ``errors``,
``config``, ``calls`` (the ingress's model calls: budget, resend, hedge), ``shedding`` (load
shedding), ``metrics`` (``GET /metrics``), ``holder`` (hot swap), ``canary`` (a candidate
version for a share of users, or in shadow), ``loading`` + ``predictor`` + ``item_table`` +
``item_cache`` (a loaded version), ``replica`` (a model replica without Ray), ``local`` (the
same API in one uvicorn process), ``loopback`` (Serve's own listeners kept on 127.0.0.1 on a
local Ray). Importing the package does nothing.
"""
