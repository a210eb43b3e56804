"""hookline gateway: HTTP ingress, provider verification, publishing."""
