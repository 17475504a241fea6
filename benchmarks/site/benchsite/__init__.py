"""The benchmark's Django site: three views over two small tables, settings from the environment."""
