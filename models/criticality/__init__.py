"""Criticality experiments built on :mod:`fractals.criticality`."""
