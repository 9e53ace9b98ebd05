"""The `headwater` command line: run the stack or one role, query, operate. Nothing imports ops."""
