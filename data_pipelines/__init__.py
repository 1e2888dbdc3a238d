"""bioprop data_pipelines."""
