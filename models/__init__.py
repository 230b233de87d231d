"""The bundled digits models and test split (data files only)."""
