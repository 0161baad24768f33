"""Settings shared by the API, the workers and the CLI."""
