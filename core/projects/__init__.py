"""Projects: the model, its settings, keys and origin policy, and the live registry every role
reads from the JetStream KV bucket (with its on-disk cache)."""
