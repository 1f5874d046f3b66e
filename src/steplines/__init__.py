"""steplines."""
