"""designgan: conditional GANs that propose engineering designs (JAX/Flax)."""

from gan import xla_flags

# Before any JAX computation: XLA reads XLA_FLAGS when it starts its first backend.
xla_flags.apply()
