"""Tracking with MLflow: the store and runs (``store``), models and the registry (``model_registry``),
listing (``runs``) and comparing (``compare``) runs."""
