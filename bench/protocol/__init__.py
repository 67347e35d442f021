"""What a run is: the protocol schema and its loader, the result row's schema, and the one place where
built-in components and plugins are registered."""
