"""Engines: the contract (base.py) and its implementations, one module each."""
