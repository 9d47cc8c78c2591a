"""The analyzer's SQL steps, shipped as package data (one file per table produced, in pipeline order)."""
