"""The wire contracts between roles: the envelope the edge publishes and the consumers read, and
the subjects they travel on."""
