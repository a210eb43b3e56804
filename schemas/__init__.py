"""hookline contracts: event envelope, JSON Schemas and AMQP topology as data (no I/O)."""
