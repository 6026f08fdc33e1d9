"""Small, complete examples of using jaxlearn with your own code (see docs/custom-env.md)."""
