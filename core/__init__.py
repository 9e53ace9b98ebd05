"""What every role shares: the project model and its live registry, the wire contracts, the
ClickHouse schema and the service plumbing. It imports nothing of the roles (edge, consumers,
control, ops); they all depend on it."""
