"""The wire contracts between roles: the envelope the edge publishes and the consumers read, what
a time in its events may look like, and the subjects they travel on."""
