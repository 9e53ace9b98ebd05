"""Service plumbing every role's process uses: the Quart app factory with health routes and
error handlers, the API error type, background-task helpers, backoff, request-log context, and
the guards every HTTP listener applies (JSON depth, failed-auth limits, client networks)."""
