"""What is derived from a project's events and read back: sessions, and later funnels, paths and
patterns. Pure query builders and reference computations, testable without HTTP and shared by the
control plane, the CLI and the roles that keep derived tables current (ARCHITECTURE.md, the
analytics layer). Below the roles, above the core: it never imports edge, consumers or control."""
