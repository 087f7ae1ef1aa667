"""Spiking neural networks: the reference LIF classifier, its surrogate-gradient training and hand-off layers."""
