"""designgan: conditional GANs that propose engineering designs (JAX/Flax)."""
