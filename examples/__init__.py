"""Example user data and models for "Bring your own model and data" (README)."""
