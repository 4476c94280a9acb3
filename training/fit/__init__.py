"""Training one window: the engine and the trainers that run it (in-process or Ray Train)."""
