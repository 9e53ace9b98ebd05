"""The web console the control plane serves at /console/ (docs/console.md): its built assets and the
routes that serve them."""
