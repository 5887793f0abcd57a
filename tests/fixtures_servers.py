"""Real local servers for tests (Ray, MLflow, S3), started and stopped by PID. Owner: platform (issue 5)."""
