"""Reference ML models and their build pipelines (see ``models.sensor``)."""
