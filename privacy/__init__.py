"""Privacy and traffic quality: anonymisation rules and their detectors, bot and spam filtering,
cookieless visitor ids, data-subject tombstones (docs/privacy.md).

Pure code, below every role: the core's project settings declare their rules with the types
defined here, the consumers and the edge apply them, the control plane previews and validates
them. Nothing here does I/O.
"""
