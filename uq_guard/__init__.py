"""uq_guard: know when not to trust your LLM."""
