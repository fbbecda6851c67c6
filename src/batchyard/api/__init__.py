"""HTTP adapters only: parse, authenticate, call a service, render Azure-shaped answers."""
