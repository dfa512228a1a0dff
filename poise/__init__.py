"""poise: spiking neural networks trained with Equilibrium Propagation, from NumPy to FPGA."""

__version__ = "0.1.0"
