"""HTTP resources: each turns a request into a call to a domain service."""
